"""The webhook sink: one Standard Webhooks POST per transition.

Body ``{"type", "timestamp", "data"}``; ``webhook-id`` is the transition id (unchanged across
retries, so receivers can drop duplicates); ``webhook-timestamp`` is this attempt's time;
``webhook-signature`` is ``v1,`` + base64 HMAC-SHA256 under the ``whsec_`` secret, computed
by the ``standardwebhooks`` reference library.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from watcher.config.delivery import WebhookSinkSettings
from watcher.delivery.sinks._http import classify, post
from watcher.delivery.sinks.base import REAL_TIME, Batching, Outgoing, Sink, Timer


def webhook_body(item: Outgoing) -> bytes:
    """The JSON payload for one transition."""
    transition = item.transition
    document = {
        "type": transition.type.value,
        "timestamp": datetime.fromtimestamp(transition.observed_ms / 1000, UTC).isoformat(),
        "data": {**transition.to_dict(), "severity": item.severity},
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSink(Sink):
    """POSTs each transition to one URL."""

    def __init__(
        self,
        settings: WebhookSinkSettings,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        timer: Timer = REAL_TIME,
    ) -> None:
        # One transition a request, so a burst goes out side by side rather than in batches;
        # a batch of several would be re-sent whole when any one of its POSTs failed.
        super().__init__(
            settings.name,
            Batching(max_in_flight=settings.concurrency),
            rate_per_s=settings.rate_limit_per_s,
            timer=timer,
        )
        self._url = settings.url.get_secret_value()
        self._signer = Webhook(settings.secret.get_secret_value()) if settings.secret else None
        self._headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self._timeout_s = settings.timeout_s
        self._session = session
        self._clock = clock
        self._secrets = tuple(
            value
            for value in (
                self._url,
                settings.secret.get_secret_value() if settings.secret else "",
                *self._headers.values(),
            )
            if value
        )

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        for item in batch:
            body = webhook_body(item)
            now = datetime.fromtimestamp(int(self._clock()), UTC)
            headers = {
                **self._headers,
                "webhook-id": item.transition.id,
                "webhook-timestamp": str(int(now.timestamp())),
            }
            if self._signer is not None:
                headers["webhook-signature"] = self._signer.sign(
                    item.transition.id, now, body.decode()
                )
            reply = await post(
                self._session,
                self._url,
                body,
                headers=headers,
                timeout_s=self._timeout_s,
                secrets=self._secrets,
            )
            error = classify(reply)
            if error is not None:
                raise error
