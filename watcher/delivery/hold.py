"""The hold stage: how long a chosen batch waits before it is sent.

There are two reasons to wait: the sink's rate limits (its receiver allows only so many sends a
second or a minute) and the grouping wait (the first of a burst waits, so the burst goes out as
one message). ``hold_ms`` decides from numbers it is given, with no clock of its own. The rate
limits are the one piece of clocked state: a sliding ``RateWindow`` (a robot's "20 a minute")
and a ``TokenBucket`` (``rate_limit_per_s``), both owned by the sink, because only the sink
records its sends. Their arithmetic is pure functions (``refill``, ``token_wait_s``) so it is
tested from tables. Nothing here selects rows, sends, or writes the outbox, and a hold never
drops a row or fails it: it only postpones the send.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from watcher.store.records import OutboxRow

# Float arithmetic can leave a bucket at 0.9999999 after sleeping exactly the wait it asked
# for; that token is there, and refusing it would only make the sender sleep for nothing.
_EPSILON = 1e-9


class RateGate(Protocol):
    """A rate limit a sink checks before each send and charges for each send."""

    def wait_s(self) -> float:
        """Seconds until one more send fits (0: now)."""
        ...

    def room(self) -> int:
        """How many sends fit now, one after another, without waiting."""
        ...

    def record(self) -> None:
        """One send starts now."""
        ...


class RateWindow:
    """At most ``per_minute`` sends in any 60 seconds."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._sent: deque[float] = deque()

    def _expire(self) -> float:
        now = self._clock()
        while self._sent and now - self._sent[0] >= 60:
            self._sent.popleft()
        return now

    def wait_s(self) -> float:
        """Seconds until one more send fits in the window."""
        now = self._expire()
        if len(self._sent) < self._per_minute:
            return 0.0
        return 60 - (now - self._sent[0])

    def room(self) -> int:
        self._expire()
        return max(0, self._per_minute - len(self._sent))

    def record(self) -> None:
        self._sent.append(self._clock())


def burst_of(rate_per_s: float) -> float:
    """A bucket holds one second's worth of sends, and never less than one send."""
    return max(1.0, rate_per_s)


def refill(tokens: float, elapsed_s: float, rate_per_s: float) -> float:
    """The tokens in a bucket ``elapsed_s`` after it held ``tokens``. Pure."""
    return min(burst_of(rate_per_s), tokens + max(0.0, elapsed_s) * rate_per_s)


def token_wait_s(tokens: float, rate_per_s: float) -> float:
    """Seconds until a bucket holding ``tokens`` has a whole one (0: it has one now). Pure."""
    if tokens >= 1 - _EPSILON:
        return 0.0
    return (1 - tokens) / rate_per_s


class TokenBucket:
    """At most ``rate_per_s`` sends a second on average, in bursts of at most one second's.

    It starts full, so a sink that was quiet sends a burst at once and then settles to the rate.
    """

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._clock = clock
        self._tokens = burst_of(rate_per_s)
        self._updated = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = refill(self._tokens, now - self._updated, self._rate)
        self._updated = now
        return self._tokens

    def wait_s(self) -> float:
        return token_wait_s(self._refill(), self._rate)

    def room(self) -> int:
        return max(0, math.floor(self._refill() + _EPSILON))

    def record(self) -> None:
        # May go below zero if a caller sends without waiting; the debt is then paid in time.
        self._tokens = self._refill() - 1


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
