"""The record stage: what a send's outcome does to its rows in the outbox.

Delivered rows are marked sent. A failed row is retried after full-jitter backoff (honouring
the receiver's Retry-After), or dead-lettered (kept, and re-sendable) if the failure is
permanent or the row is older than the sink's ``max_age_s``. ``verdict`` makes that choice from
its arguments alone; ``Recorder`` writes it, counts it and logs it. Nothing here selects rows,
waits, or sends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from watcher.core.backoff import backoff_s
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


@dataclass(frozen=True, slots=True)
class Retry:
    """Try the row again after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Dead:
    """Give the row up to the dead letters, for the reason ``why``."""

    why: str


def verdict(
    row: OutboxRow, error: SinkError, policy: DeliveryPolicy, now_ms: int, rng: random.Random
) -> Retry | Dead:
    """What a failed send means for one of its rows.

    Draws from ``rng`` only for a retry, so a seeded source gives the same delays whatever
    else failed in the batch.
    """
    if not error.retryable:
        return Dead("permanent error")
    if now_ms - row.created_ms > policy.max_age_s * 1000:
        return Dead("too old")
    delay_s = backoff_s(
        row.attempts + 1,
        base_s=policy.backoff_base_s,
        cap_s=policy.backoff_cap_s,
        rng=rng,
        retry_after_s=error.retry_after_s,
    )
    return Retry(delay_s)


class Recorder:
    """Writes send outcomes to the outbox, with their metrics and log events."""

    def __init__(
        self,
        store: OutboxStore,
        *,
        wall_ms: Callable[[], int],
        rng: random.Random,
        metrics: Metrics | None,
    ) -> None:
        self._store = store
        self._wall_ms = wall_ms
        self._rng = rng
        self._metrics = metrics

    async def sent(self, sink_name: str, batch: Sequence[OutboxRow]) -> None:
        await self._store.mark_sent([row.seq for row in batch], self._wall_ms())
        self._count(sink_name, "sent", len(batch))
        _log.debug("delivered", sink=sink_name, count=len(batch))

    async def failed(
        self, sink_name: str, batch: Sequence[OutboxRow], error: SinkError, policy: DeliveryPolicy
    ) -> None:
        now_ms = self._wall_ms()
        reason = str(error)
        for row in batch:
            outcome = verdict(row, error, policy, now_ms, self._rng)
            if isinstance(outcome, Dead):
                await self._store.mark_dead([row.seq], now_ms, reason)
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
            await self._store.mark_retry([row.seq], now_ms + int(outcome.delay_s * 1000), reason)
            self._count(sink_name, "retry")
            _log.warning(
                "delivery_retrying",
                sink=sink_name,
                transition_id=row.transition_id,
                attempt=row.attempts + 1,
                retry_in_s=round(outcome.delay_s, 3),
                reason=reason,
            )

    def _count(self, sink_name: str, result: str, amount: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels(sink_name, result).inc(amount)
