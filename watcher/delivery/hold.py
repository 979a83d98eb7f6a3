"""The hold stage: how long a chosen batch waits before it is sent.

There are two reasons to wait: the sink's rate window (its receiver allows only so many sends a
minute) and the grouping wait (the first of a burst waits, so the burst goes out as one
message). ``hold_ms`` decides from numbers it is given, with no clock of its own; the window is
the one piece of clocked state, and the sink owns it because only the sink records its sends.
Nothing here selects rows, sends, or writes the outbox, and a hold never drops a row: it only
postpones the pass.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from watcher.store.records import OutboxRow


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


def hold_ms(
    oldest: OutboxRow, now_ms: int, *, rate_wait_s: float, group_wait_s: float, flush: bool
) -> int:
    """Milliseconds to hold the batch whose oldest row is ``oldest`` (0: send now). Pure.

    ``flush`` (the ``once`` command, shutdown) skips the grouping wait, never the rate window:
    the receiver's limit holds whatever the watcher is doing.
    """
    rate_ms = int(rate_wait_s * 1000)
    group_ms = 0
    # A row that was tried before already had its grouping wait; holding it again would only
    # delay a retry the backoff has already spaced out.
    if group_wait_s and oldest.attempts == 0 and not flush:
        group_ms = oldest.created_ms + int(group_wait_s * 1000) - now_ms
    return max(rate_ms, group_ms)
