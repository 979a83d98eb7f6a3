"""The outbox dispatcher: delivers committed outbox rows to their sinks, at least once.

Each sink has its own loop, so a dead or slow sink never delays another. A row is marked sent
only after its sink returned; a retryable failure reschedules it with full-jitter backoff
(honouring Retry-After); a permanent failure, or a row older than the sink's ``max_age_s``,
is dead-lettered (kept, and re-sendable). Rows of one invocation go out in commit order: a row
waiting for its retry holds back the later rows of the same invocation on that sink.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from watcher.core.backoff import backoff_s
from watcher.delivery.sinks import Outgoing, Sink, SinkError
from watcher.store.errors import StateStoreError
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


def select_due(rows: Sequence[OutboxRow], now_ms: int, max_batch: int) -> list[OutboxRow]:
    """The rows to send now: due, and not behind an undue row of the same invocation. Pure."""
    blocked: set[str] = set()
    chosen: list[OutboxRow] = []
    for row in rows:
        if row.invocation_key in blocked:
            continue
        if row.next_attempt_ms > now_ms:
            blocked.add(row.invocation_key)
            continue
        chosen.append(row)
        if len(chosen) >= max_batch:
            break
    return chosen


def select_heads(rows: Sequence[OutboxRow], now_ms: int, limit: int) -> list[OutboxRow]:
    """The first pending row of each invocation, if due, in commit order. Pure."""
    seen: set[str] = set()
    heads: list[OutboxRow] = []
    for row in rows:
        if row.invocation_key in seen:
            continue
        seen.add(row.invocation_key)
        if row.next_attempt_ms <= now_ms:
            heads.append(row)
            if len(heads) >= limit:
                break
    return heads


class Dispatcher:
    """Runs one delivery loop per sink over the shared state store."""

    def __init__(
        self,
        store: OutboxStore,
        sinks: Mapping[str, Sink],
        policies: Mapping[str, DeliveryPolicy] | None = None,
        *,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        rng: random.Random | None = None,
        scan_limit: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._sinks = dict(sinks)
        self._policies = dict(policies or {})
        self._wall_ms = wall_ms
        self._rng = rng or random.Random()
        self._scan_limit = scan_limit
        self._metrics = metrics
        self._wakeups = {name: asyncio.Event() for name in self._sinks}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None

    def wake(self) -> None:
        """New rows were committed: every sink loop looks again."""
        for event in self._wakeups.values():
            event.set()

    async def deliver_due(self, sink_name: str, *, flush: bool = False) -> tuple[int, int | None]:
        """One pass for one sink. Returns (rows handled, ms until the next pending row is due).

        ``flush`` skips the grouping wait (for ``once`` and shutdown), never the rate limit.
        """
        sink = self._sinks[sink_name]
        handled = 0
        while True:
            now_ms = self._wall_ms()
            rows = await self._store.pending(sink_name, self._scan_limit)
            if sink.max_in_flight > 1:
                # One request per row: the head rows of several invocations go out at once
                # (order is per invocation, so only one row of each is ever in flight).
                batches = [[row] for row in select_heads(rows, now_ms, sink.max_in_flight)]
            else:
                batches = [select_due(rows, now_ms, sink.max_batch)]
            if not batches or not batches[0]:
                waits = [row.next_attempt_ms - now_ms for row in rows]
                return handled, (max(0, min(waits)) if waits else None)
            hold_ms = self._hold_ms(sink, batches[0][0], now_ms, flush)
            if hold_ms > 0:
                return handled, hold_ms
            await asyncio.gather(*(self._send(sink, batch) for batch in batches))
            handled += sum(len(batch) for batch in batches)

    @staticmethod
    def _hold_ms(sink: Sink, oldest: OutboxRow, now_ms: int, flush: bool) -> int:
        """How long to hold a batch: the sink's rate window, then its grouping wait."""
        rate_ms = int(sink.wait_s() * 1000)
        group_ms = 0
        if sink.group_wait_s and oldest.attempts == 0 and not flush:
            group_ms = oldest.created_ms + int(sink.group_wait_s * 1000) - now_ms
        return max(rate_ms, group_ms)

    async def _send(self, sink: Sink, batch: list[OutboxRow]) -> None:
        seqs = [row.seq for row in batch]
        transitions = await self._store.load_transitions([row.transition_id for row in batch])
        outgoing = [Outgoing(transitions[r.transition_id], r.severity, r.template) for r in batch]
        try:
            await sink.send(outgoing)
        except SinkError as exc:
            await self._failed(sink.name, batch, exc)
            return
        await self._store.mark_sent(seqs, self._wall_ms())
        self._count(sink.name, "sent", len(batch))
        _log.debug("delivered", sink=sink.name, count=len(batch))

    def _count(self, sink_name: str, result: str, amount: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels(sink_name, result).inc(amount)

    async def _failed(self, sink_name: str, batch: list[OutboxRow], error: SinkError) -> None:
        policy = self._policies.get(sink_name, DeliveryPolicy())
        now_ms = self._wall_ms()
        reason = str(error)
        for row in batch:
            too_old = now_ms - row.created_ms > policy.max_age_s * 1000
            if not error.retryable or too_old:
                await self._store.mark_dead([row.seq], now_ms, reason)
                self._count(sink_name, "dead")
                _log.error(
                    "delivery_dead",
                    sink=sink_name,
                    transition_id=row.transition_id,
                    attempts=row.attempts + 1,
                    reason=reason,
                    why="permanent error" if not error.retryable else "too old",
                )
                continue
            delay_s = backoff_s(
                row.attempts + 1,
                base_s=policy.backoff_base_s,
                cap_s=policy.backoff_cap_s,
                rng=self._rng,
                retry_after_s=error.retry_after_s,
            )
            await self._store.mark_retry([row.seq], now_ms + int(delay_s * 1000), reason)
            self._count(sink_name, "retry")
            _log.warning(
                "delivery_retrying",
                sink=sink_name,
                transition_id=row.transition_id,
                attempt=row.attempts + 1,
                retry_in_s=round(delay_s, 3),
                reason=reason,
            )

    async def drain(self) -> None:
        """Deliver everything due now on every sink, concurrently (for ``once``)."""
        await asyncio.gather(*(self.deliver_due(name, flush=True) for name in self._sinks))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; one concurrent loop per sink."""
        self._stop = stop
        for name in self._sinks:
            self._start_loop(name)
        await stop.wait()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)
        self._loops.clear()

    def _start_loop(self, name: str) -> None:
        assert self._stop is not None
        self._loops[name] = asyncio.create_task(self._loop(name, self._stop), name=f"outbox:{name}")

    def replace_sinks(
        self, sinks: Mapping[str, Sink], policies: Mapping[str, DeliveryPolicy]
    ) -> None:
        """Deliver to ``sinks`` from now on (config reload). Rows of a removed sink stay in the
        outbox, pending, and go out if a sink of that name comes back."""
        for name in set(self._sinks) - set(sinks):
            task = self._loops.pop(name, None)
            if task is not None:
                task.cancel()  # a send cut short leaves its rows pending: sent again later
            self._wakeups.pop(name, None)
            _log.info("sink_removed", sink=name)
        self._sinks = dict(sinks)
        self._policies = dict(policies)
        for name in self._sinks:
            if name not in self._wakeups:
                self._wakeups[name] = asyncio.Event()
                if self._stop is not None and not self._stop.is_set():
                    self._start_loop(name)
        self.wake()

    async def _loop(self, sink_name: str, stop: asyncio.Event) -> None:
        wakeup = self._wakeups[sink_name]
        while not stop.is_set():
            wakeup.clear()
            try:
                _, next_due_ms = await self.deliver_due(sink_name)
            except StateStoreError as exc:
                _log.error("outbox_state_error", sink=sink_name, error=str(exc))
                next_due_ms = 5000
            except Exception:  # a bug in one sink must not stop the others
                _log.exception("outbox_loop_error", sink=sink_name)
                next_due_ms = 5000
            timeout_s = 60.0 if next_due_ms is None else max(0.01, next_due_ms / 1000)
            waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
