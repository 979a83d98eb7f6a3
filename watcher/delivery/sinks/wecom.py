"""The WeCom group-robot sink: markdown up to 4096 bytes, errcode checked, 20 a minute."""

from __future__ import annotations

import json

from watcher.core.render import Message
from watcher.delivery.sinks._chat import ChatSink, cap_utf8, markdown

API_FREQ_OUT_OF_LIMIT = 45009
MAX_MARKDOWN_BYTES = 4096


class WeComSink(ChatSink):
    """Sends grouped markdown messages to one WeCom robot (the key in its URL is the secret)."""

    code_keys = ("errcode",)
    throttle_codes = frozenset({API_FREQ_OUT_OF_LIMIT})

    def request(self, message: Message) -> tuple[str, bytes]:
        text = cap_utf8(markdown(message), MAX_MARKDOWN_BYTES)
        body = {"msgtype": "markdown", "markdown": {"content": text}}
        return self._url, json.dumps(body, ensure_ascii=False).encode()
