"""The Slack incoming-webhook sink: blocks plus a text fallback; 429 honours Retry-After."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from watcher.delivery_config import SlackSinkSettings
from watcher.render import Message
from watcher.sinks import Outgoing
from watcher.sinks._chat import RateWindow, cap_utf8, group_message
from watcher.sinks._http import classify, post


def slack_payload(message: Message) -> dict[str, Any]:
    """``blocks`` for people, ``text`` for notifications and old clients."""
    body = "\n".join(message.lines)
    if message.link:
        body += f"\n<{message.link}|Open in the FC console>"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": cap_utf8(f"*[{message.severity.upper()}] {message.title}*", 3000),
            },
        }
    ]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": cap_utf8(body, 3000)}})
    return {"text": cap_utf8(message.text, 3000), "blocks": blocks}


class SlackSink:
    """Sends grouped messages to one Slack incoming webhook (its URL is the secret)."""

    max_in_flight = 1

    def __init__(
        self,
        settings: SlackSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
    ) -> None:
        self.name = settings.name
        self.group_wait_s = settings.group_wait_s
        self.max_batch = settings.max_group
        self._url = settings.url.get_secret_value()
        self._timeout_s = settings.timeout_s
        self._session = session
        self._region = region
        self._window = RateWindow(settings.max_per_minute)

    def __repr__(self) -> str:
        return f"SlackSink(name={self.name!r})"

    def wait_s(self) -> float:
        return self._window.wait_s()

    async def send(self, batch: Sequence[Outgoing]) -> None:
        payload = slack_payload(group_message(batch, self._region))
        self._window.record()
        reply = await post(
            self._session,
            self._url,
            json.dumps(payload, ensure_ascii=False).encode(),
            timeout_s=self._timeout_s,
            secrets=(self._url,),
        )
        error = classify(reply)
        if error is not None:
            raise error

    async def close(self) -> None:
        return None
