"""The record stage: what a send's outcome does to its rows in the outbox.

Delivered rows are marked sent. A failed row is dead-lettered (kept, and re-sendable) if the
failure is permanent or the row is older than the sink's ``max_age_s``; else it is retried,
and when depends on whose failure it was (``health.Blame``): its own failure waits a
full-jitter backoff grown by its own failures only (``row_failures``); a failure of the sink
leaves it due at once, for the circuit to hold; a Retry-After makes it wait that long.
``verdict`` makes that choice from its arguments alone, on steady time (``watcher.core.clock``),
so a step of the wall clock neither ages a row nor moves its retry; ``Recorder`` writes it,
counts it and logs it: each row's retry at debug, and one warning per sink per interval for its
failures (``FailureLog``: the first of an episode at once, then the rows and attempts since).
Nothing here selects rows, waits, sends, or judges the sink's health.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from watcher.core.backoff import backoff_s
from watcher.core.throttle import Window, step
from watcher.delivery.health import Blame
from watcher.delivery.sinks.base import SinkError
from watcher.store.protocols import OutboxStore
from watcher.store.records import OutboxRow
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.outbox")


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry settings of one sink."""

    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    max_age_s: float = 24 * 3600.0
    probe_cap_s: float = 5.0
    """A down receiver gets a probe every 5 s at most, so its return is seen within 5 s."""
    """The longest wait between probes of an unhealthy sink (and never over ``backoff_cap_s``):
    it bounds how long a recovered receiver goes unnoticed."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try the row again after ``delay_s``; ``own`` if the failure was the row's own."""

    delay_s: float
    own: bool = True


@dataclass(frozen=True, slots=True)
class Dead:
    """Give the row up to the dead letters, for the reason ``why``."""

    why: str


def verdict(
    row: OutboxRow,
    error: SinkError,
    policy: DeliveryPolicy,
    now_ms: int,
    rng: random.Random,
    blamed: Blame = Blame.ROW,
) -> Retry | Dead:
    """What a failed send means for one of its rows, given whose failure it was, at the steady
    time ``now_ms`` (the row's ``created_ms`` is steady too).

    Draws from ``rng`` only for a row's own retry, so a seeded source gives the same delays
    whatever else failed in the batch.
    """
    if not error.retryable:
        return Dead("permanent error")
    if now_ms - row.created_ms > policy.max_age_s * 1000:
        return Dead("too old")
    if blamed is Blame.SINK:
        return Retry(0.0, own=False)  # due at once: the circuit, not the row, holds it
    if blamed is Blame.THROTTLE and error.retry_after_s is not None:
        return Retry(error.retry_after_s, own=False)
    delay_s = backoff_s(
        row.row_failures + 1,
        base_s=policy.backoff_base_s,
        cap_s=policy.backoff_cap_s,
        rng=rng,
        retry_after_s=error.retry_after_s,
    )
    return Retry(delay_s)


@dataclass(slots=True)
class _Tally:
    """One sink's retried failures since its last warning line."""

    window: Window | None = None
    rows: set[int] = field(default_factory=set)
    attempts: int = 0
    last: dict[str, object] = field(default_factory=dict)
    failed_s: float | None = None
    """When the sink last failed: a failure an interval after the last one begins an episode."""


class FailureLog:
    """One ``delivery_retrying`` warning per sink per ``interval_s``, with how many rows failed
    and how many attempts, instead of a line per row per attempt (a dead receiver and a backlog
    would flood the console). The first failure of an episode (the sink's first in an interval)
    is told at once; later ones are counted, and told on the first failure or pass after the
    interval; what is left is told at ``flush`` (the stop). When to tell a failure is
    ``watcher.core.throttle.step``'s decision."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._tallies: dict[str, _Tally] = {}

    def failed(self, sink: str, seqs: Sequence[int], now_ms: int, **last: object) -> None:
        """Retried rows ``seqs`` of one failed send, at steady ``now_ms``; ``last`` describes it."""
        if not seqs:
            return  # all dead-lettered: each of those has its own error line
        tally = self._tallies.setdefault(sink, _Tally())
        now_s = now_ms / 1000
        first = tally.failed_s is None or now_s - tally.failed_s >= self.interval_s
        tally.rows.update(seqs)
        tally.attempts += len(seqs)
        tally.last, tally.failed_s = last, now_s
        held: int | None = 0
        if first:  # told at once, even right after a line that told held-back ones
            tally.window = Window(now_s)
        else:
            tally.window, held = step(tally.window, now_s, self.interval_s)
        if held is not None:
            self._tell(sink, tally, first=first)

    def tick(self, sink: str, now_ms: int) -> None:
        """A pass of the sink: tell what was held back, if an interval has passed since."""
        tally = self._tallies.get(sink)
        if tally is None or not tally.attempts or tally.window is None:
            return
        if now_ms / 1000 - tally.window.opened_s >= self.interval_s:
            tally.window = Window(now_ms / 1000)
            self._tell(sink, tally, first=False)

    def flush(self) -> None:
        """Tell every sink's failures not told yet (the dispatcher is stopping)."""
        for sink, tally in self._tallies.items():
            if tally.attempts:
                self._tell(sink, tally, first=False)

    def _tell(self, sink: str, tally: _Tally, *, first: bool) -> None:
        _log.warning(
            "delivery_retrying",
            sink=sink,
            rows=len(tally.rows),
            attempts=tally.attempts,
            first=first,
            interval_s=self.interval_s,
            **tally.last,
        )
        tally.rows, tally.attempts = set(), 0


class Recorder:
    """Writes send outcomes to the outbox, with their metrics and log events: due times on the
    steady clock, the times rows were sent or given up on the wall clock (they are records)."""

    def __init__(
        self,
        store: OutboxStore,
        *,
        steady_ms: Callable[[], int],
        wall_ms: Callable[[], int],
        rng: random.Random,
        metrics: Metrics | None,
        failures: FailureLog | None = None,
    ) -> None:
        self._store = store
        self._steady_ms = steady_ms
        self._wall_ms = wall_ms
        self._rng = rng
        self._metrics = metrics
        self.failures = failures or FailureLog()

    async def sent(self, sink_name: str, batch: Sequence[OutboxRow]) -> None:
        await self._store.mark_sent([row.seq for row in batch], self._wall_ms())
        self._count(sink_name, "sent", len(batch))
        _log.debug("delivered", sink=sink_name, count=len(batch))

    async def failed(
        self,
        sink_name: str,
        batch: Sequence[OutboxRow],
        error: SinkError,
        policy: DeliveryPolicy,
        blamed: Blame = Blame.ROW,
    ) -> None:
        now_ms = self._steady_ms()
        reason = str(error)
        retried: list[int] = []
        for row in batch:
            outcome = verdict(row, error, policy, now_ms, self._rng, blamed)
            if isinstance(outcome, Dead):
                await self._store.mark_dead([row.seq], self._wall_ms(), reason)
                self._count(sink_name, "dead")
                _log.error(
                    "delivery_dead",
                    sink=sink_name,
                    transition_id=row.transition_id,
                    attempts=row.attempts + 1,
                    reason=reason,
                    why=outcome.why,
                )
                continue
            next_ms = now_ms + int(outcome.delay_s * 1000)
            await self._store.mark_retry([row.seq], next_ms, reason, own_failure=outcome.own)
            self._count(sink_name, "retry")
            retried.append(row.seq)
            _log.debug(
                "delivery_retry_row",
                sink=sink_name,
                transition_id=row.transition_id,
                attempt=row.attempts + 1,
                blame=blamed.value,
                retry_in_s=round(outcome.delay_s, 3),
                reason=reason,
            )
        self.failures.failed(sink_name, retried, now_ms, blame=blamed.value, reason=reason)

    def _count(self, sink_name: str, result: str, amount: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels(sink_name, result).inc(amount)
