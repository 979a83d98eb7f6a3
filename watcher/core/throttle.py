"""Rate-limiting a repeated log line: one line per kind per interval, with a count of the rest.

A failure that repeats many times a second (a full disk fails every write) must stay visible
without flooding the journal: the first occurrence of a kind is let through at once, later ones
within ``interval_s`` of the last line let through are only counted, and the next line let
through says how many were held back. The decision is ``step``, a pure function of the kind's
``Window`` and the time; ``Throttle`` keeps one window per kind on an injected clock, so tests
drive it with a list of times and no sleeping. A window is per kind, never global, so a new
kind of failure is never hidden behind a flood of another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """One kind's state: when its last line was let through, and how many were held since."""

    opened_s: float
    held: int = 0


def step(window: Window | None, now_s: float, interval_s: float) -> tuple[Window, int | None]:
    """Decide one occurrence: the kind's new window, and ``None`` to hold the line back or the
    number held back since the previous line (to say on this one) to let it through."""
    if window is None:
        return Window(now_s), 0
    if now_s - window.opened_s >= interval_s:
        return Window(now_s), window.held
    return Window(window.opened_s, window.held + 1), None


class Throttle:
    """``step`` for several kinds, on an injected clock (seconds, monotonic)."""

    def __init__(self, interval_s: float, now_s: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self._now_s = now_s
        self._windows: dict[str, Window] = {}

    def hit(self, kind: str) -> int | None:
        """One occurrence of ``kind``: None to stay quiet, else how many were held back."""
        window, said = step(self._windows.get(kind), self._now_s(), self.interval_s)
        self._windows[kind] = window
        return said
