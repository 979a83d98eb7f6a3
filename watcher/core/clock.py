"""Time, injectable: durations and due times on a steady clock, what people read on the wall clock.

The wall clock (epoch ms) may be stepped at any moment, an hour forward or back, by an operator
or NTP. So whatever measures a duration or keeps a due time (backoff, max age, stuck, grouping,
probes, Retry-After pauses) reads ``steady(clock)``: the wall clock as read once, moved on by
the monotonic clock, so it reads like epoch ms yet never jumps within a process. ``Since`` ages
a recorded wall time (an FC event's) on it, comparing it with the wall clock once only. What
is recorded for people (observedMs, times in messages, when a row was sent) reads ``wall_ms``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Clock(Protocol):
    """Time, injectable."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (scheduling)."""
        ...

    def wall_ms(self) -> int:
        """Epoch milliseconds (what is recorded)."""
        ...


@runtime_checkable
class SteadyClock(Clock, Protocol):
    """A clock that keeps its own steady reading (shared by every reader in the process)."""

    def steady_ms(self) -> int:
        """Epoch-like milliseconds that never jump: for durations and due times."""
        ...


# Read once per process, so every SystemClock (the poller's and the dispatcher's) agrees, and
# a row the poller stamps is compared with the very same clock the dispatcher reads.
_ANCHOR_MS = int(time.time() * 1000) - int(time.monotonic() * 1000)


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return int(time.time() * 1000)

    def steady_ms(self) -> int:
        return _ANCHOR_MS + int(time.monotonic() * 1000)


class OneClock:
    """One injected time read as wall, steady and monotonic alike: for tests (and callers)
    that move a single time themselves."""

    def __init__(self, ms: Callable[[], int]) -> None:
        self._ms = ms

    def monotonic(self) -> float:
        return self._ms() / 1000

    def wall_ms(self) -> int:
        return self._ms()

    def steady_ms(self) -> int:
        return self._ms()


def steady(clock: Clock) -> Callable[[], int]:
    """The steady milliseconds of ``clock``: its own if it keeps them, else its wall clock as
    read now, moved on by its monotonic clock from now on."""
    if isinstance(clock, SteadyClock):
        return clock.steady_ms
    anchor_ms = clock.wall_ms() - int(clock.monotonic() * 1000)
    return lambda: anchor_ms + int(clock.monotonic() * 1000)


@dataclass(frozen=True, slots=True)
class Since:
    """A recorded moment (``at_ms``, wall time: an FC event's timestamp, say) and when this
    process first saw it, on both clocks.

    Its age is how old it was when seen (the one comparison with the wall clock, which no
    later step can change) plus the steady time since. A status seen at 12:00:05 with its event
    at 12:00:00 is 15 s old ten steady seconds later, whatever the wall clock says by then.
    """

    at_ms: int
    seen_wall_ms: int
    seen_steady_ms: int

    def age_ms(self, steady_ms: int) -> int:
        """Milliseconds since ``at_ms`` at the steady time ``steady_ms``. Pure."""
        # Never negative: a moment stamped ahead of our clock began no later than it was seen.
        return max(0, self.seen_wall_ms - self.at_ms) + max(0, steady_ms - self.seen_steady_ms)
