"""The Feishu / Lark custom-bot sink: rich-text post, optional signing in the body, code checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from watcher.delivery_config import FeishuSinkSettings
from watcher.render import Message
from watcher.sinks import Outgoing
from watcher.sinks._chat import RateWindow, cap_utf8, group_message
from watcher.sinks._http import body_code, classify, post

FLOW_CONTROL = 11232
MAX_BODY_BYTES = 20_000


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")): Feishu keys with both."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def post_content(message: Message) -> dict[str, Any]:
    """Feishu's ``post`` rich text: a title, one paragraph a line, a link."""
    paragraphs: list[list[dict[str, str]]] = [
        [{"tag": "text", "text": cap_utf8(line, 2000)}] for line in message.lines
    ]
    if message.link:
        paragraphs.append([{"tag": "a", "text": "Open in the FC console", "href": message.link}])
    title = f"[{message.severity.upper()}] {message.title}"
    return {"post": {"zh_cn": {"title": title, "content": paragraphs}}}


class FeishuSink:
    """Sends grouped messages to one Feishu bot."""

    max_in_flight = 1

    def __init__(
        self,
        settings: FeishuSinkSettings,
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
        self._timeout_s = settings.timeout_s
        self._session = session
        self._region = region
        self._clock = clock
        self._window = RateWindow(settings.max_per_minute)
        self._secrets = tuple(v for v in (self._url, self._secret) if v)

    def __repr__(self) -> str:
        return f"FeishuSink(name={self.name!r})"

    def wait_s(self) -> float:
        return self._window.wait_s()

    async def send(self, batch: Sequence[Outgoing]) -> None:
        message = group_message(batch, self._region)
        body: dict[str, Any] = {"msg_type": "post", "content": post_content(message)}
        if self._secret:
            timestamp_s = int(self._clock())
            body["timestamp"] = str(timestamp_s)
            body["sign"] = feishu_sign(self._secret, timestamp_s)
        encoded = json.dumps(body, ensure_ascii=False).encode()
        while len(encoded) > MAX_BODY_BYTES and len(message.lines) > 1:
            message = Message(message.title, message.lines[:-1], message.severity, message.link)
            body["content"] = post_content(message)
            encoded = json.dumps(body, ensure_ascii=False).encode()
        self._window.record()
        reply = await post(
            self._session, self._url, encoded, timeout_s=self._timeout_s, secrets=self._secrets
        )
        error = classify(
            reply,
            body_code=body_code(reply.body, "code", "StatusCode"),
            throttle_codes=frozenset({FLOW_CONTROL}),
        )
        if error is not None:
            raise error

    async def close(self) -> None:
        return None
