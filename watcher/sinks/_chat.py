"""What the chat-robot sinks share: a per-robot rate window, grouping, markdown, the send path.

A burst routed to one robot within ``group_wait_s`` arrives as one batch (the dispatcher holds
it) and becomes one message, so twelve failures are one readable message, not twelve, and the
robot's 20-a-minute limit is respected by the rate window besides.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from watcher.render import Message, render_group
from watcher.sinks import Outgoing

SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


class RateWindow:
    """At most ``per_minute`` sends in any 60 seconds."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._sent: deque[float] = deque()

    def wait_s(self) -> float:
        """Seconds until one more send fits in the window."""
        now = self._clock()
        while self._sent and now - self._sent[0] >= 60:
            self._sent.popleft()
        if len(self._sent) < self._per_minute:
            return 0.0
        return 60 - (now - self._sent[0])

    def record(self) -> None:
        self._sent.append(self._clock())


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
