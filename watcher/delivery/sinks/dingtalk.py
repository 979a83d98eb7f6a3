"""The DingTalk custom-robot sink: markdown, optional signing, errcode checked, 20 a minute."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from urllib.parse import quote_plus

import aiohttp

from watcher.config.delivery import DingTalkSinkSettings
from watcher.core.render import Message
from watcher.delivery.sinks._chat import SignedChatSink, cap_utf8, markdown
from watcher.delivery.sinks.base import REAL_TIME, Timer

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


class DingTalkSink(SignedChatSink):
    """Sends grouped markdown messages to one DingTalk robot."""

    code_keys = ("errcode",)
    throttle_codes = frozenset({SEND_TOO_FAST})

    def __init__(
        self,
        settings: DingTalkSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
        clock: Callable[[], float] = time.time,
        timer: Timer = REAL_TIME,
    ) -> None:
        super().__init__(settings, session, region=region, clock=clock, timer=timer)
        self._mentions = list(settings.at_mobiles)

    def request(self, message: Message) -> tuple[str, bytes]:
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
        return url, json.dumps(body, ensure_ascii=False).encode()
