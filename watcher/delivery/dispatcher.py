"""The outbox dispatcher: delivers committed outbox rows to their sinks, at least once.

It owns the per-sink loops and chains the stages for each pass: the sink's circuit
(``circuits``: all due rows, one probe, or nothing yet), ``select`` (which pending rows go now,
in order per invocation), ``hold`` (the rate window and the grouping wait), ``send``, then
``record`` (sent, retry or dead, in the store) with the circuit told the outcome first. Each
sink has its own loop, so a dead or slow sink never delays another. The dispatcher decides
none of those things itself: a rule about order, waiting, failure or health belongs in its
stage, where it is tested without a loop. Every wait and due time is on the clock's steady
time (``watcher.core.clock``); only what is recorded for people reads the wall clock. A stop
is bounded: once ``stop`` is set no send starts; the sends in flight get ``stop_timeout_s``
(``poll.stop_timeout_s``, 10 s by default, running alongside the polls' own bound of the same
length), then are cut short, their rows left pending with no attempt counted, for the next
start; sends that did finish get up to ``RECORD_GRACE_S`` (2 s) more to be recorded. The
service's final ``drain`` (5 s) skips the sinks that were cut short, so with the defaults the
whole stop takes at most 10 + 2 + 5 s and the closing: well inside systemd's 30 s.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence

import structlog

from watcher.core.clock import Clock, OneClock, SystemClock, steady
from watcher.delivery.circuits import Circuits
from watcher.delivery.health import ProbeTiming
from watcher.delivery.hold import hold_ms
from watcher.delivery.record import DeliveryPolicy, Recorder
from watcher.delivery.select import Bounds, bounded, next_due_ms, plan, select_due, select_heads
from watcher.delivery.send import send
from watcher.delivery.sinks.base import Sink, SinkError
from watcher.store.errors import StateStoreError
from watcher.store.protocols import OutboxStore
from watcher.store.records import OutboxRow
from watcher.telemetry.metrics import Metrics

# Re-exported: callers import these from here, where they lived before the stages split.
__all__ = ["DeliveryPolicy", "Dispatcher", "select_due", "select_heads"]

_log = structlog.get_logger("watcher.outbox")

RECORD_GRACE_S = 2.0
"""After the stop bound cut the sends still in flight: how long the sends that finished may
take to be recorded (one write each) before their loops are cancelled too."""


class Dispatcher:
    """Runs one delivery loop per sink over the shared state store."""

    def __init__(
        self,
        store: OutboxStore,
        sinks: Mapping[str, Sink],
        policies: Mapping[str, DeliveryPolicy] | None = None,
        *,
        clock: Clock | None = None,
        wall_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
        scan_limit: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        """``clock`` keeps the time (the system's by default); ``wall_ms`` alone, as older
        callers and tests pass it, is one time read as both steady and wall."""
        self._store = store
        self._sinks = dict(sinks)
        self._policies = dict(policies or {})
        clock = clock or (OneClock(wall_ms) if wall_ms is not None else SystemClock())
        self._steady_ms = steady(clock)
        self._scan_limit = scan_limit
        rng = rng or random.Random()
        wall = clock.wall_ms
        self._recorder = Recorder(
            store, steady_ms=self._steady_ms, wall_ms=wall, rng=rng, metrics=metrics
        )
        self._circuits = Circuits(store, steady_ms=self._steady_ms, wall_ms=wall, rng=rng)
        if metrics is not None:
            metrics.watch_sinks(lambda: self._circuits.readings(self._sinks), lambda: wall() / 1000)
        self._wakeups = {name: asyncio.Event() for name in self._sinks}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        self._bounds: dict[str, Bounds] = {}
        self._sending: dict[str, set[asyncio.Task[SinkError | None]]] = {}
        """Each sink's sends in flight: what the stop bound cuts short."""
        self._cut_short: set[str] = set()
        """Sinks whose sends the stop bound cut: the final drain leaves them alone."""

    def wake(self) -> None:
        """New rows were committed: every sink loop looks again."""
        for event in self._wakeups.values():
            event.set()

    async def deliver_due(
        self, sink_name: str, *, flush: bool = False, stop: asyncio.Event | None = None
    ) -> tuple[int, int | None]:
        """One pass for one sink. Returns (rows handled, ms until the next pending row is due).

        ``flush`` skips the grouping wait (for ``once`` and shutdown), never the rate limit
        nor the circuit of an unhealthy sink. Once ``stop`` is set, no more sends start.
        """
        sink = self._sinks[sink_name]
        await self._circuits.load()
        handled = 0
        while not (stop is not None and stop.is_set()):
            now_ms = self._steady_ms()
            self._recorder.failures.tick(sink_name, now_ms)
            rows = await self._pending(sink_name, now_ms)
            allowed = self._circuits.gate(sink_name, now_ms)
            batches = (
                [] if allowed.wait_ms else plan(rows, now_ms, sink.batching, probe=allowed.probe)
            )
            if not batches:
                due_ms = next_due_ms(rows, now_ms)
                return handled, None if due_ms is None else max(due_ms, allowed.wait_ms)
            wait_ms = hold_ms(
                batches[0][0],
                now_ms,
                rate_wait_s=sink.wait_s(),
                group_wait_s=sink.batching.group_wait_s,
                flush=flush,
            )
            if wait_ms > 0:
                return handled, wait_ms
            # Only what the sink can start now: a send held by its rate limit would hold this
            # pass (and a reload or a stop) with it; the rest stay pending for the next pass.
            batches = batches[: max(1, sink.room())]
            sends = (self._deliver(sink, batch, probe=allowed.probe) for batch in batches)
            await asyncio.gather(*sends)
            handled += sum(len(batch) for batch in batches)
        return handled, None

    async def _pending(self, sink_name: str, now_ms: int) -> list[OutboxRow]:
        """The sink's pending rows, their times kept within what this process could write."""
        rows = await self._store.pending(sink_name, self._scan_limit)
        cap_ms = int(self._policies.get(sink_name, DeliveryPolicy()).backoff_cap_s * 1000)
        rows, self._bounds[sink_name] = bounded(
            rows, now_ms, cap_ms, self._bounds.get(sink_name, {})
        )
        return rows

    async def _deliver(self, sink: Sink, batch: Sequence[OutboxRow], *, probe: bool) -> None:
        sending = asyncio.ensure_future(send(self._store, sink, batch))
        in_flight = self._sending.setdefault(sink.name, set())
        in_flight.add(sending)
        try:
            error = await sending
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return  # the send alone was cut short by the stop bound: its rows stay as they were
        finally:
            in_flight.discard(sending)
        # The circuit hears the outcome before any await, so sends finishing side by side see
        # each other's effect on it; the store and the report come after.
        now_ms = self._steady_ms()
        policy = self._policies.get(sink.name, DeliveryPolicy())
        if error is None:
            change = self._circuits.succeeded(sink.name, now_ms)
            await self._recorder.sent(sink.name, batch)
        else:
            keys = {row.invocation_key for row in batch}
            timing = ProbeTiming(
                policy.backoff_base_s, min(policy.probe_cap_s, policy.backoff_cap_s)
            )
            blamed, change = self._circuits.failed(
                sink.name, error, keys, probe=probe, now_ms=now_ms, timing=timing
            )
            await self._recorder.failed(sink.name, batch, error, policy, blamed)
        if change is not None:
            await self._circuits.report(change)

    async def drain(self) -> None:
        """Deliver everything due now on every sink, concurrently (for ``once``, and the
        service's final pass): but to a sink whose sends the stop bound cut short, nothing."""
        names = [name for name in self._sinks if name not in self._cut_short]
        await asyncio.gather(*(self.deliver_due(name, flush=True) for name in names))

    async def run(
        self, stop: asyncio.Event, *, stop_timeout_s: float | Callable[[], float] = 10.0
    ) -> None:
        """Deliver until ``stop`` is set, one concurrent loop per sink; then give the sends in
        flight ``stop_timeout_s`` (a number, or read when the stop comes) to finish."""
        self._stop = stop
        for name in self._sinks:
            self._start_loop(name)
        await stop.wait()
        bound_s = stop_timeout_s() if callable(stop_timeout_s) else stop_timeout_s
        loops, self._loops = self._loops, {}
        _, late = await asyncio.wait(loops.values(), timeout=bound_s) if loops else ((), set())
        cut = sorted(name for name, task in loops.items() if task in late)
        for name in cut:
            for sending in self._sending.get(name, ()):
                sending.cancel()
        if late:
            _, stuck = await asyncio.wait(late, timeout=RECORD_GRACE_S)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        self._cut_short.update(cut)
        self._recorder.failures.flush()
        _log.info("deliveries_stopped", bound_s=bound_s, cut_short=cut)

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
            self._circuits.forget(name)
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
                _, next_due = await self.deliver_due(sink_name, stop=stop)
            except StateStoreError as exc:
                _log.error("outbox_state_error", sink=sink_name, error=str(exc))
                next_due = 5000
            except Exception:  # a bug in one sink must not stop the others
                _log.exception("outbox_loop_error", sink=sink_name)
                next_due = 5000
            timeout_s = 60.0 if next_due is None else max(0.01, next_due / 1000)
            waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
