"""Transitions per minute and type for the chart, read once and then only for new minutes.

Counting a window of hours reads every transition in it (the time index holds no type), so
at 100,000s of transitions a day the first read takes a while: 150 ms for 75,000. A minute
that is over stays as it was: transitions are stamped when observed and committed seconds
later at most, and retention deletes only what is far older than the window. So minutes
older than ``SETTLE_MINUTES`` are kept, and each refresh reads only what came after them.
The whole window is read again only if the wall clock went back (new transitions would then
land in kept minutes). The console warms this when its endpoint starts, on its own thread.

Used on the reader's one thread only, so it needs no lock.
"""

from __future__ import annotations

import sqlite3

from watcher.store.sqlite.console_reads import transitions_per_minute

SETTLE_MINUTES = 2
_MS_PER_MINUTE = 60_000
Row = tuple[int, str, int]


class MinuteCounts:
    """A cache of settled minutes' counts in front of ``transitions_per_minute``."""

    def __init__(self) -> None:
        self._settled: list[Row] = []
        self._first = 0
        """The first minute the cache holds; 0: empty."""
        self._settled_until = 0
        """The first minute not held (still open to new transitions)."""
        self._last_now_ms = 0

    def read(self, db: sqlite3.Connection, since_ms: int, now_ms: int) -> list[Row]:
        """(minute, type, count) for every minute from ``since_ms`` to ``now_ms``."""
        first = since_ms // _MS_PER_MINUTE
        settled_until = now_ms // _MS_PER_MINUTE - SETTLE_MINUTES
        clock_went_back = now_ms < self._last_now_ms
        self._last_now_ms = now_ms
        if not self._first or first < self._first or clock_went_back:
            rows = transitions_per_minute(db, first * _MS_PER_MINUTE)
            self._settled = [row for row in rows if row[0] < settled_until]
            self._first, self._settled_until = first, settled_until
            return rows
        fresh = transitions_per_minute(db, self._settled_until * _MS_PER_MINUTE)
        if settled_until > self._settled_until:
            self._settled = [row for row in self._settled if row[0] >= first]
            self._settled += [row for row in fresh if row[0] < settled_until]
            self._settled_until = settled_until
            fresh = [row for row in fresh if row[0] >= settled_until]
        return [*(row for row in self._settled if row[0] >= first), *fresh]
