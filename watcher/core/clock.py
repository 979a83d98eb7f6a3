"""Time, injectable: the scheduler and the poller read both clocks through this."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Time, injectable."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (scheduling)."""
        ...

    def wall_ms(self) -> int:
        """Epoch milliseconds (what is recorded)."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return int(time.time() * 1000)
