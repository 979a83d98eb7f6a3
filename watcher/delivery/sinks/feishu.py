"""The Feishu / Lark custom-bot sink: rich-text post, optional signing in the body, code checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from watcher.core.render import Message
from watcher.delivery.sinks._chat import SignedChatSink, cap_utf8

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


class FeishuSink(SignedChatSink):
    """Sends grouped messages to one Feishu bot."""

    code_keys = ("code", "StatusCode")
    throttle_codes = frozenset({FLOW_CONTROL})

    def request(self, message: Message) -> tuple[str, bytes]:
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
        return self._url, encoded
