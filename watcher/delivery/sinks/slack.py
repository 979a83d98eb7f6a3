"""The Slack incoming-webhook sink: blocks plus a text fallback; 429 honours Retry-After."""

from __future__ import annotations

import json
from typing import Any

from watcher.core.render import Message
from watcher.delivery.sinks._chat import ChatSink, cap_utf8


def slack_payload(message: Message) -> dict[str, Any]:
    """``blocks`` for people, ``text`` for notifications and old clients."""
    body = "\n".join(message.lines)
    if message.link:
        body += f"\n<{message.link}|Open in the FC console>"
    title = f"*[{message.severity.upper()}] {message.title}*"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": cap_utf8(title, 3000)}}
    ]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": cap_utf8(body, 3000)}})
    return {"text": cap_utf8(message.text, 3000), "blocks": blocks}


class SlackSink(ChatSink):
    """Sends grouped messages to one Slack incoming webhook (its URL is the secret)."""

    def request(self, message: Message) -> tuple[str, bytes]:
        return self._url, json.dumps(slack_payload(message), ensure_ascii=False).encode()
