"""Whether the state store's writes work, tracked where every write passes, and said sparingly.

The store calls ``failed`` or ``succeeded`` after each write; the rest of the daemon only reads
``WriteHealth`` (readiness answers 503, the STATUS line and a gauge say it), so neither the
engine nor delivery needs to know. Unhealthy lasts from a failed write to the next write that
succeeds: the daemon stays up meanwhile, unlike Vector, which stops on disk errors it cannot
handle, because a full disk or a read-only file is what an operator fixes without losing
anything (a failed commit is polled again, a failed mark re-sent), and a restart would change
nothing. A corrupt file is the exception that stops it, at the next start's check.

A failing disk fails every write, many a second: ``state_write_failed`` is let through once per
kind per ``interval_s`` (``watcher.core.throttle``) with the number held back, and the recovery
is one ``state_write_recovered`` line with the outage's count. A store with nothing to write
would stay unhealthy after the cause is gone, so ``probe_due`` asks for a test write when no
write was tried for ``interval_s``.
"""

from __future__ import annotations

import structlog

from watcher.core.clock import Clock
from watcher.core.throttle import Throttle
from watcher.store.errors import StateStoreError
from watcher.store.records import WriteHealth

_log = structlog.get_logger("watcher.store")

LOG_INTERVAL_S = 10.0
"""At most one ``state_write_failed`` line per kind, and one recovery line, per this long."""


class WriteHealthTracker:
    """The store's write health, updated on the event loop after each write."""

    def __init__(self, clock: Clock, interval_s: float = LOG_INTERVAL_S) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._throttle = Throttle(interval_s, clock.monotonic)
        self._state = WriteHealth()
        self._tried_s = clock.monotonic()
        self._failing_since_s = 0.0

    def snapshot(self) -> WriteHealth:
        """The current health: a frozen record, replaced (never changed) on each update."""
        return self._state

    def probe_due(self) -> bool:
        """Unhealthy, and no write tried for ``interval_s``: time for a test write."""
        idle_s = self._clock.monotonic() - self._tried_s
        return not self._state.ok and idle_s >= self._interval_s

    def failed(self, write: str, exc: StateStoreError) -> None:
        """A write failed: unhealthy from now (or still), one log line per kind per interval."""
        self._tried_s = self._clock.monotonic()
        state, kind = self._state, exc.kind.value
        counts = {**state.failed_by_kind, kind: state.failed_by_kind.get(kind, 0) + 1}
        if state.ok:
            self._failing_since_s = self._tried_s
        self._state = WriteHealth(
            ok=False,
            kind=kind,
            reason=str(exc),
            since_ms=self._clock.wall_ms() if state.ok else state.since_ms,
            failing_writes=1 if state.ok else state.failing_writes + 1,
            failed_by_kind=counts,
        )
        held = self._throttle.hit(kind)
        if held is not None:
            _log.error(
                "state_write_failed",
                kind=kind,
                write=write,
                error=str(exc),
                failing_writes=self._state.failing_writes,
                held_back=held,
                interval_s=self._interval_s,
            )

    def succeeded(self) -> None:
        """A write committed: healthy again, if it was not."""
        self._tried_s = self._clock.monotonic()
        state = self._state
        if state.ok:
            return
        self._state = WriteHealth(
            since_ms=self._clock.wall_ms(), failed_by_kind=state.failed_by_kind
        )
        # Rate-limited too: a nearly full disk can fail big commits and pass small ones.
        if self._throttle.hit("recovered") is not None:
            _log.warning(
                "state_write_recovered",
                kind=state.kind,
                failed_writes=state.failing_writes,
                lasted_s=round(self._tried_s - self._failing_since_s, 3),
            )
