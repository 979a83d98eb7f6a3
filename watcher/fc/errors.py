"""Typed FC API errors, and the pure function that classifies a failed response.

Each error class says whether the same request can succeed later (``retryable``): the poller
logs it with every failed poll, and callers branch on the class, never on message text. A poll
is backed off and tried again either way, since a 4xx can be fixed on FC's side too (a missing
permission granted, a function created), and ``invocation.poll_failing`` tells a person.
Messages carry the FC code, the HTTP status and the request id (what a
support ticket needs) and never a credential: the client scrubs them before building an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from watcher.core.backoff import retry_after_s
from watcher.core.redact import scrub


class FcError(Exception):
    """Base of every error the FC client raises."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        http_status: int = 0,
        request_id: str = "",
    ) -> None:
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code={self.code}")
        if self.http_status:
            parts.append(f"http={self.http_status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class NotFoundError(FcError):
    """The invocation (or its service or function) does not exist, or not yet.

    Not retryable as such: the scheduler has its own policy for late-appearing invocations.
    """


class ThrottledError(FcError):
    """429, 503 ``ResourceThrottled`` or a ``Throttling*`` code: slow down and retry."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        code: str = "",
        http_status: int = 0,
        request_id: str = "",
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, code=code, http_status=http_status, request_id=request_id)


class AuthError(FcError):
    """401/403: bad signature, unknown key, missing permission, clock skew. Needs a human."""


class ClockSkewError(AuthError):
    """FC refused the request time: this machine's clock is more than 15 minutes off."""


class ServerError(FcError):
    """A 5xx from FC: transient on FC's side."""

    retryable = True


class RequestError(FcError):
    """Any other 4xx: the request itself is wrong, so retrying it cannot help."""


class TransportError(FcError):
    """Timeout, connection reset, DNS or TLS failure: no HTTP answer at all."""

    retryable = True


class BadResponseError(FcError):
    """A 2xx whose body is not what FC sends (not JSON, no status, truncated, oversized).

    Retryable: a proxy or a cut connection is the usual cause, and a later poll may be clean.
    """

    retryable = True


NOT_FOUND_CODES = frozenset(
    {
        "StatefulAsyncInvocationNotFound",
        "AsyncTaskNotFound",
        "ServiceNotFound",
        "FunctionNotFound",
        "AliasNotFound",
        "VersionNotFound",
    }
)
AUTH_CODES = frozenset(
    {"SignatureNotMatch", "InvalidAccessKeyID", "AccessDenied", "InvalidSecurityToken"}
)


def error_code_and_message(body: bytes) -> tuple[str, str]:
    """Read the code and message from any of the three error body spellings FC uses."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    code = document.get("ErrorCode") or document.get("errorCode") or document.get("Code") or ""
    message = (
        document.get("ErrorMessage")
        or document.get("errorMessage")
        or document.get("Message")
        or ""
    )
    return str(code)[:200], str(message)[:500]


def classify_response(
    http_status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str, ...] = (),
    now_s: float | None = None,
) -> FcError:
    """Turn a non-2xx response into the typed error it stands for. Pure.

    FC echoes an unknown access key id back in its message, so ``secrets`` are masked there.
    """
    code, message = error_code_and_message(body)
    message = scrub(message, secrets)
    request_id = headers.get("X-Fc-Request-Id", "")
    text = message or f"FC answered HTTP {http_status}"
    if http_status == 429 or code == "ResourceThrottled" or code.startswith("Throttling"):
        return ThrottledError(
            text,
            retry_after_s=retry_after_s(headers, now_s),
            code=code,
            http_status=http_status,
            request_id=request_id,
        )
    error_class: type[FcError]
    if http_status == 404 or code in NOT_FOUND_CODES:
        error_class = NotFoundError
    elif code == "RequestTimeTooSkewed" or (http_status == 403 and "current time" in message):
        error_class = ClockSkewError
    elif http_status in (401, 403) or code in AUTH_CODES:
        error_class = AuthError
    elif http_status >= 500:
        error_class = ServerError
    else:
        error_class = RequestError
    return error_class(text, code=code, http_status=http_status, request_id=request_id)


def outcome_label(exc: FcError | None) -> str:
    """A bounded label for what one FC request came to (``ok``, ``not_found``, ``throttled``,
    ``auth``, ``server``, ``transport``, ``bad_response``, ``rejected``): for the metric."""
    if exc is None:
        return "ok"
    for kind, label in _OUTCOME_LABELS:
        if isinstance(exc, kind):
            return label
    return "error"


_OUTCOME_LABELS: tuple[tuple[type[FcError], str], ...] = (
    (NotFoundError, "not_found"),
    (ThrottledError, "throttled"),
    (AuthError, "auth"),
    (ServerError, "server"),
    (TransportError, "transport"),
    (BadResponseError, "bad_response"),
    (RequestError, "rejected"),
)
