"""The DingTalk custom-robot sink: markdown, optional signing, errcode checked, 20 a minute."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote_plus

import aiohttp

from watcher.delivery_config import DingTalkSinkSettings
from watcher.sinks import Outgoing
from watcher.sinks._chat import RateWindow, cap_utf8, group_message, markdown
from watcher.sinks._http import body_code, classify, post

SEND_TOO_FAST = 130101  # "send too fast, exceed 20 times per minute"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), as DingTalk checks it."""
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """The robot URL with ``timestamp`` and the URL-encoded ``sign`` appended."""
    joiner = "&" if "?" in url else "?"
    sign = quote_plus(dingtalk_sign(secret, timestamp_ms))
    return f"{url}{joiner}timestamp={timestamp_ms}&sign={sign}"


class DingTalkSink:
    """Sends grouped markdown messages to one DingTalk robot."""

    max_in_flight = 1

    def __init__(
        self,
        settings: DingTalkSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self.group_wait_s = settings.group_wait_s
        self.max_batch = settings.max_group
        self._url = settings.url.get_secret_value()
        self._secret = settings.secret.get_secret_value() if settings.secret else None
        self._mentions = list(settings.at_mobiles)
        self._timeout_s = settings.timeout_s
        self._session = session
        self._region = region
        self._clock = clock
        self._window = RateWindow(settings.max_per_minute)
        self._secrets = tuple(v for v in (self._url, self._secret) if v)

    def __repr__(self) -> str:
        return f"DingTalkSink(name={self.name!r})"

    def wait_s(self) -> float:
        return self._window.wait_s()

    async def send(self, batch: Sequence[Outgoing]) -> None:
        message = group_message(batch, self._region)
        body = {
            "msgtype": "markdown",
            "markdown": {
                "title": message.title[:64],
                "text": cap_utf8(markdown(message, mentions=self._mentions), 18_000),
            },
            "at": {"atMobiles": self._mentions, "isAtAll": False},
        }
        url = self._url
        if self._secret:
            url = signed_url(url, self._secret, int(self._clock() * 1000))
        self._window.record()
        reply = await post(
            self._session,
            url,
            json.dumps(body, ensure_ascii=False).encode(),
            timeout_s=self._timeout_s,
            secrets=self._secrets,
        )
        error = classify(
            reply,
            body_code=body_code(reply.body, "errcode"),
            throttle_codes=frozenset({SEND_TOO_FAST}),
        )
        if error is not None:
            raise error

    async def close(self) -> None:
        return None
