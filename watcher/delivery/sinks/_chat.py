"""What the chat-robot sinks share: rate limits each, grouping, markdown, the send path.

A burst routed to one robot within ``group_wait_s`` arrives as one batch (the dispatcher holds
it) and becomes one message, so twelve failures are one readable message, not twelve, and the
robot's limits (``max_per_minute``, a sliding window, and ``rate_limit_per_s``) are respected
besides: the ``Sink`` base class holds and records each message under them, and the
dispatcher's hold stage reads them through ``wait_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import aiohttp

from watcher.config.delivery import ChatSinkSettings, SignedChatSinkSettings
from watcher.core.render import Message, render_group
from watcher.delivery.sinks._http import body_code, classify, post
from watcher.delivery.sinks.base import REAL_TIME, Batching, Outgoing, Sink, Timer

SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


def group_message(batch: Sequence[Outgoing], region: str | None) -> Message:
    """One message for the batch, at its highest severity, with the first route's template."""
    severity = max((item.severity for item in batch), key=lambda s: SEVERITY_ORDER.get(s, 0))
    return render_group(
        [item.transition for item in batch],
        region=region,
        severity=severity,
        template=batch[0].template,
    )


def markdown(message: Message, *, mentions: Sequence[str] = ()) -> str:
    """Markdown that DingTalk and WeCom render: a heading, one paragraph a line, a link."""
    parts = [f"### [{message.severity.upper()}] {message.title}", *message.lines]
    if message.link:
        parts.append(f"[Open in the FC console]({message.link})")
    if mentions:
        parts.append(" ".join(f"@{mobile}" for mobile in mentions))
    return "\n\n".join(parts)


def cap_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, on a character boundary."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode(errors="ignore") + "..."


class ChatSink(Sink):
    """What every robot sink does: group, render, respect the rate window, POST, classify.

    A subclass says how a message becomes its robot's request (``request``) and which body
    keys and codes its robot uses (``code_keys``, ``throttle_codes``).
    """

    code_keys: tuple[str, ...] = ()
    throttle_codes: frozenset[int] = frozenset()

    def __init__(
        self,
        settings: ChatSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
        extra_secrets: tuple[str, ...] = (),
        timer: Timer = REAL_TIME,
    ) -> None:
        # One message at a time by default: the robot's window counts messages, and grouping
        # is the point; a concurrency above 1 sends one transition a message, side by side.
        batching = Batching(
            max_batch=settings.max_group,
            max_in_flight=settings.concurrency,
            group_wait_s=settings.group_wait_s,
        )
        super().__init__(
            settings.name,
            batching,
            rate_per_s=settings.rate_limit_per_s,
            per_minute=settings.max_per_minute,
            timer=timer,
        )
        self._url = settings.url.get_secret_value()
        self._timeout_s = settings.timeout_s
        self._session = session
        self._region = region
        self._secrets = tuple(v for v in (self._url, *extra_secrets) if v)

    def request(self, message: Message) -> tuple[str, bytes]:
        """The URL and the JSON body that carry ``message`` to this robot."""
        raise NotImplementedError

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        url, body = self.request(group_message(batch, self._region))
        reply = await post(
            self._session, url, body, timeout_s=self._timeout_s, secrets=self._secrets
        )
        code = body_code(reply.body, *self.code_keys) if self.code_keys else None
        error = classify(reply, body_code=code, throttle_codes=self.throttle_codes)
        if error is not None:
            raise error


class SignedChatSink(ChatSink):
    """A robot whose messages carry a signature over a timestamp (DingTalk, Feishu)."""

    def __init__(
        self,
        settings: SignedChatSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
        clock: Callable[[], float] = time.time,
        timer: Timer = REAL_TIME,
    ) -> None:
        self._secret = settings.secret.get_secret_value() if settings.secret else None
        super().__init__(
            settings, session, region=region, extra_secrets=(self._secret or "",), timer=timer
        )
        self._clock = clock
