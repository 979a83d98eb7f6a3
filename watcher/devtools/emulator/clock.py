"""Scenario time for the emulator: how many seconds of a scenario's timeline have passed.

This module only measures scenario time (real and sped up, or moved by hand in tests); it must
not know about requests or timelines, and wall time for signatures is not its business.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds elapsed on the scenario's timeline."""

    def elapsed_s(self) -> float:
        """Seconds since the emulator started."""
        ...


class RealClock:
    """Scenario time follows the monotonic clock, optionally sped up."""

    def __init__(self, speed: float = 1.0) -> None:
        self._start = time.monotonic()
        self._speed = speed

    def elapsed_s(self) -> float:
        return (time.monotonic() - self._start) * self._speed


class ManualClock:
    """Scenario time moves only when told to: deterministic timelines for tests."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def elapsed_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        """Move scenario time forward."""
        self._now_s += seconds
