"""The WeCom group-robot sink: markdown up to 4096 bytes, errcode checked, 20 a minute."""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiohttp

from watcher.delivery_config import WeComSinkSettings
from watcher.sinks import Outgoing
from watcher.sinks._chat import RateWindow, cap_utf8, group_message, markdown
from watcher.sinks._http import body_code, classify, post

API_FREQ_OUT_OF_LIMIT = 45009
MAX_MARKDOWN_BYTES = 4096


class WeComSink:
    """Sends grouped markdown messages to one WeCom robot (the key in its URL is the secret)."""

    max_in_flight = 1

    def __init__(
        self,
        settings: WeComSinkSettings,
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
        return f"WeComSink(name={self.name!r})"

    def wait_s(self) -> float:
        return self._window.wait_s()

    async def send(self, batch: Sequence[Outgoing]) -> None:
        text = cap_utf8(markdown(group_message(batch, self._region)), MAX_MARKDOWN_BYTES)
        body = {"msgtype": "markdown", "markdown": {"content": text}}
        self._window.record()
        reply = await post(
            self._session,
            self._url,
            json.dumps(body, ensure_ascii=False).encode(),
            timeout_s=self._timeout_s,
            secrets=(self._url,),
        )
        error = classify(
            reply,
            body_code=body_code(reply.body, "errcode"),
            throttle_codes=frozenset({API_FREQ_OUT_OF_LIMIT}),
        )
        if error is not None:
            raise error

    async def close(self) -> None:
        return None
