"""The due-time queue: which tracked invocation is polled next.

A heap of (due, order, key, generation). Entries are never removed in place: an invocation
that was rescheduled, finished or untracked bumps or loses its generation, and its stale
entries are skipped when they reach the top. That keeps a reschedule at O(log n) with no
search, which matters at tens of thousands of invocations. Time is the caller's monotonic
clock; this module decides nothing about *when* to poll.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

IsCurrent = Callable[[str, int], bool]
"""Whether (key, generation) still names a live schedule entry."""


class DueQueue:
    """Poll due times, in order, skipping entries that went stale."""

    def __init__(self, is_current: IsCurrent) -> None:
        self._heap: list[tuple[float, int, str, int]] = []
        self._order = 0
        self._is_current = is_current

    def push(self, key: str, generation: int, due_s: float) -> None:
        """Schedule ``key`` (at ``generation``) for monotonic time ``due_s``."""
        self._order += 1
        heapq.heappush(self._heap, (due_s, self._order, key, generation))

    def clear(self) -> None:
        self._heap.clear()

    def earliest_s(self) -> float | None:
        """The earliest live due time, dropping stale entries on the way; None if empty."""
        heap = self._heap
        while heap:
            due, _, key, generation = heap[0]
            if self._is_current(key, generation):
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, now_s: float, limit: int | None) -> list[tuple[str, float]]:
        """Live entries due by ``now_s`` (at most ``limit``), with how late each is (s)."""
        heap = self._heap
        found: list[tuple[str, float]] = []
        while heap and heap[0][0] <= now_s and (limit is None or len(found) < limit):
            due, _, key, generation = heapq.heappop(heap)
            if self._is_current(key, generation):
                found.append((key, now_s - due))
        return found
