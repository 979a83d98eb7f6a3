"""What the HTTP sinks share: one POST helper, one classifier, and URL redaction.

``classify`` is pure and decides, from the HTTP status and a robot's body code, whether a
failed send is retried or dead-lettered. Nothing here logs; errors carry redacted URLs only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from watcher.core.backoff import retry_after_s
from watcher.core.redact import scrub
from watcher.delivery.sinks.base import FailureKind, SinkError

RETRYABLE_STATUSES = frozenset({408, 425, 429})


def redact_url(url: str) -> str:
    """scheme://host[:port]/... : robot URLs carry their token in the path or the query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, reduced to what classification needs."""

    status: int
    body: str
    retry_after_s: float | None


def classify(
    reply: Reply, *, body_code: int | None = None, throttle_codes: frozenset[int] = frozenset()
) -> SinkError | None:
    """``None`` if delivered; else the error, retryable or permanent. Pure.

    2xx with a zero (or no) body code is success. 408, 425, 429 and 5xx (but 501) are retried;
    so is a robot's own throttling code in a 200 body. Every other failure is permanent:
    410 means the endpoint is gone, other 4xx mean the request itself is wrong. A retried
    answer is of kind ``STATUS``: one alone may be the row's fault, so sink health needs such
    answers across invocations before it blames the receiver.
    """
    status = reply.status
    if 200 <= status < 300:
        if not body_code:
            return None
        retryable = body_code in throttle_codes
        return SinkError(
            f"HTTP {status} with error code {body_code}: {reply.body[:200]}",
            retryable=retryable,
            retry_after_s=60.0 if retryable else None,
        )
    retryable = status in RETRYABLE_STATUSES or (status >= 500 and status != 501)
    return SinkError(
        f"HTTP {status}: {reply.body[:200]}",
        retryable=retryable,
        retry_after_s=reply.retry_after_s if retryable else None,
    )


def body_code(text: str, *keys: str) -> int | None:
    """A robot's numeric error code from a JSON body (the first of ``keys`` present)."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    for key in keys:
        value = document.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float,
    secrets: tuple[str, ...] = (),
) -> Reply:
    """POST ``body`` as JSON; transport failures (refused, reset, DNS, timeout: no answer at
    all) become retryable ``SinkError``s of kind ``TRANSPORT``, which sink health counts as
    the receiver's failure at once."""
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            text = await response.text(errors="replace")
            return Reply(
                response.status, scrub(text[:2000], secrets), retry_after_s(response.headers)
            )
    except TimeoutError:
        raise SinkError(
            f"no answer from {redact_url(url)} within {timeout_s:g} s",
            retryable=True,
            kind=FailureKind.TRANSPORT,
        ) from None
    except aiohttp.ClientError as exc:
        reason = scrub(str(exc), (url, *secrets))[:200]
        raise SinkError(
            f"cannot reach {redact_url(url)} ({type(exc).__name__}: {reason})",
            retryable=True,
            kind=FailureKind.TRANSPORT,
        ) from None
