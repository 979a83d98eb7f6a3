"""Each sink's circuit at run time: the one place that keeps sink health between passes.

``Circuits`` holds a ``health.Circuit`` per sink, feeds it the outcomes of sends through the
pure decisions in ``health`` (synchronously, so sends finishing side by side see each other's
effect at once), and reports a change (open or closed) afterwards: the ``sink_unhealthy`` and
``sink_recovered`` log events, and one write of the sink's state to the store, so that
``fc-watcher status`` (another process) can show it and a restarted daemon resumes probing.
It must not decide anything itself (``health`` does), choose or send rows, or touch a row of
the outbox: a sink's outage never writes its waits into the rows. The circuits run on steady
time (probe and pause due times, outage lengths: no wall-clock step moves them); what is stored
and shown for people (since when, the last success) is turned into wall time on the way out.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass

import structlog

from watcher.delivery.health import (
    Blame,
    Circuit,
    Gate,
    ProbeTiming,
    after_failure,
    after_success,
    blame,
    gate,
    restored,
)
from watcher.delivery.sinks.base import SinkError
from watcher.store.protocols import OutboxStore
from watcher.store.records import SinkHealthRecord
from watcher.telemetry.metrics import SinkReading

_log = structlog.get_logger("watcher.outbox")


@dataclass(frozen=True, slots=True)
class Change:
    """A circuit that opened or closed, to be reported."""

    sink: str
    before: Circuit
    after: Circuit
    now_ms: int


class Circuits:
    """The circuits of every sink of one dispatcher."""

    def __init__(
        self,
        store: OutboxStore,
        *,
        steady_ms: Callable[[], int],
        wall_ms: Callable[[], int],
        rng: random.Random,
    ) -> None:
        self._store = store
        self._rng = rng
        self._steady_ms = steady_ms
        self._wall_ms = wall_ms
        # A sink not heard from yet counts as healthy since the start, so its "seconds since
        # success" gauge grows from there rather than from the epoch.
        self._started_ms = steady_ms()
        self._circuits: dict[str, Circuit] = {}
        self._loaded = False
        # Reports of one sink's changes must reach the store in the order they happened.
        self._reporting = asyncio.Lock()

    async def load(self) -> None:
        """Once: take over the circuits a previous run left open (their wall times are taken
        as steady ones: this run's steady clock starts at the wall clock)."""
        if self._loaded:
            return
        for record in await self._store.sink_health():
            if not record.healthy and record.sink not in self._circuits:
                self._circuits[record.sink] = restored(record)
        self._loaded = True

    def get(self, sink: str) -> Circuit:
        """The sink's circuit; a sink not heard of yet is healthy since the start."""
        found = self._circuits.get(sink)
        if found is None:
            return Circuit(since_ms=self._started_ms, last_success_ms=self._started_ms)
        return found

    def gate(self, sink: str, now_ms: int) -> Gate:
        return gate(self.get(sink), now_ms)

    def succeeded(self, sink: str, now_ms: int) -> Change | None:
        """A send was delivered; the change to report, if the circuit closed."""
        before = self.get(sink)
        after = after_success(before, now_ms)
        self._circuits[sink] = after
        return Change(sink, before, after, now_ms) if before.open else None

    def failed(
        self,
        sink: str,
        error: SinkError,
        keys: Set[str],
        *,
        probe: bool,
        now_ms: int,
        timing: ProbeTiming,
    ) -> tuple[Blame, Change | None]:
        """A send failed: whose fault it was, and the change to report, if the circuit
        opened."""
        before = self.get(sink)
        blamed = blame(error, keys, before)
        after = after_failure(
            before,
            blamed,
            keys,
            probe=probe,
            now_ms=now_ms,
            error=error,
            timing=timing,
            rng=self._rng,
        )
        self._circuits[sink] = after
        opened = after.open and not before.open
        return blamed, Change(sink, before, after, now_ms) if opened else None

    async def report(self, change: Change) -> None:
        """Log the change and store the sink's state as it is now (a later change may have
        overtaken this one while it waited; the store must end with the latest)."""
        async with self._reporting:
            backlog = await self._store.pending_count(change.sink)
            now = self.get(change.sink)
            to_wall = self._to_wall_ms()
            record = SinkHealthRecord(
                change.sink,
                not now.open,
                now.since_ms + to_wall,
                now.last_success_ms + to_wall,
                now.last_error,
            )
            await self._store.save_sink_health(record)
        if change.after.open:
            _log.warning(
                "sink_unhealthy",
                sink=change.sink,
                backlog=backlog,
                reason=change.after.last_error,
                seconds_since_success=_seconds(change.now_ms - change.before.last_success_ms),
            )
        else:
            _log.info(
                "sink_recovered",
                sink=change.sink,
                outage_s=_seconds(change.now_ms - change.before.since_ms),
                backlog=backlog,
                failed_probes=change.before.probes_failed,
            )

    def forget(self, sink: str) -> None:
        """The sink was removed by a reload; a sink of that name returning starts healthy."""
        self._circuits.pop(sink, None)

    def readings(self, sinks: Iterable[str]) -> list[SinkReading]:
        """For the gauges: each sink's health and its last success, in wall-clock seconds."""
        to_wall = self._to_wall_ms()
        return [
            SinkReading(name, not circuit.open, (circuit.last_success_ms + to_wall) / 1000)
            for name in sinks
            for circuit in (self.get(name),)
        ]

    def _to_wall_ms(self) -> int:
        """What to add to a steady time to read it on the wall clock as it is now."""
        return self._wall_ms() - self._steady_ms()


def _seconds(ms: int) -> float:
    return round(max(0, ms) / 1000, 3)
