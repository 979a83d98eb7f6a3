"""The poll scheduler: who is due, polling them concurrently, and when to poll each again.

Every tracked invocation has its own due time on a heap. Due ones are polled concurrently, at
most ``concurrency`` at a time (and under an optional token bucket); overdue ones wait on the
heap in due order until a slot frees up. What one poll does is ``watcher.poll``'s; delays come
from ``watcher.retry`` (pure); time comes from an injected ``Clock``, so tests drive the
scheduler tick by tick with ``poll_due``. ``run`` is the daemon loop around it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog

from watcher.config.models import PollSettings, Tracked
from watcher.core.backoff import adapt_interval_s, backoff_s, jittered_s
from watcher.core.clock import Clock, SystemClock
from watcher.core.model import Snapshot
from watcher.engine.poll import (
    InvocationSource,
    Poller,
    PollOutcome,
    PollState,
    Router,
    is_finished,
)
from watcher.store.protocols import PollStore
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.scheduler")


class TokenBucket:
    """A global request-rate cap: ``rate_per_s`` tokens a second, bursts up to one second's."""

    def __init__(self, rate_per_s: float, clock: Clock) -> None:
        self._rate = rate_per_s
        self._capacity = max(1.0, rate_per_s)
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock.monotonic()

    def delay_s(self) -> float:
        """Take a token; return how long to wait before using it (0 if available now)."""
        now = self._clock.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class Scheduler:
    """Owns the due-time queue and the per-invocation polling state."""

    def __init__(
        self,
        tracked: Sequence[Tracked],
        snapshots: Mapping[str, Snapshot],
        *,
        client: InvocationSource,
        store: PollStore,
        router: Router,
        settings: PollSettings,
        on_commit: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._poller = Poller(
            client=client,
            store=store,
            router=router,
            settings=settings,
            clock=self._clock,
            metrics=metrics,
            on_commit=on_commit,
        )
        self._rng = rng or random.Random()
        self._metrics = metrics
        # One labelled child per outcome, made once: every series shows from the first scrape,
        # and a poll does not look its label up.
        self._poll_counters = (
            {outcome: metrics.polls.labels(outcome.value) for outcome in PollOutcome}
            if metrics is not None
            else {}
        )
        self._on_lag = on_lag
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._bucket = (
            TokenBucket(settings.rate_limit_per_s, self._clock)
            if settings.rate_limit_per_s
            else None
        )
        self._queue: list[tuple[float, int, str, int]] = []
        self._sleeper: asyncio.Future[None] | None = None
        self._sleep_until = float("inf")
        self._at_capacity = False
        self._counter = 0
        self.outcomes: Counter[PollOutcome] = Counter()
        self.last_poll_finished_s: float | None = None
        """Monotonic time of the last completed poll (for readiness)."""
        self._states: dict[str, PollState] = {}
        self.replace_tracked(tracked, snapshots, spread=False)

    # -- reconfiguration (reload) ------------------------------------------------------------

    def set_client(self, client: InvocationSource) -> None:
        """Poll through another client from now on (endpoint or credentials changed)."""
        self._poller.client = client

    def set_router(self, router: Router) -> None:
        """Route transitions committed from now on with ``router``."""
        self._poller.router = router

    def set_settings(self, settings: PollSettings) -> None:
        """New poll settings; a new concurrency applies to polls started from now on."""
        if settings.concurrency != self._settings.concurrency:
            self._semaphore = asyncio.Semaphore(settings.concurrency)
        if settings.rate_limit_per_s != self._settings.rate_limit_per_s:
            self._bucket = (
                TokenBucket(settings.rate_limit_per_s, self._clock)
                if settings.rate_limit_per_s
                else None
            )
        self._settings = settings
        self._poller.settings = settings

    # -- membership -----------------------------------------------------------------------

    def replace_tracked(
        self, tracked: Sequence[Tracked], snapshots: Mapping[str, Snapshot], *, spread: bool = True
    ) -> None:
        """Start tracking ``tracked``: new ones are added, missing ones dropped, others kept."""
        wanted = {item.ref.key: item for item in tracked}
        for key in list(self._states):
            if key not in wanted:
                del self._states[key]  # its queue entries are skipped by key lookup
        for key, item in wanted.items():
            if key in self._states:
                current = self._states[key]
                current.labels = dict(item.labels)
                current.stuck_after_s = item.stuck_after_s
                current.stuck_repeat_s = item.stuck_repeat_s
                continue
            snapshot = snapshots.get(key)
            state = PollState(
                item.ref,
                dict(item.labels),
                snapshot,
                self._settings.interval_s,
                item.stuck_after_s,
                item.stuck_repeat_s,
            )
            state.done = is_finished(snapshot, 0) or self._forgotten(snapshot)
            self._states[key] = state
            if not state.done:
                delay = self._rng.uniform(0, self._settings.interval_s) if spread else 0.0
                self._schedule(state, delay)

    def _forgotten(self, snapshot: Snapshot | None) -> bool:
        if snapshot is None or snapshot.status is not None or not snapshot.first_not_found_ms:
            return False
        age_ms = self._clock.wall_ms() - snapshot.first_not_found_ms
        return age_ms > self._settings.forget_after_s * 1000

    def spread_first_polls(self) -> None:
        """Re-spread every pending poll uniformly over one interval (no herd at start)."""
        self._queue.clear()
        for state in self._states.values():
            if not state.done:
                state.generation += 1
                self._schedule(state, self._rng.uniform(0, self._settings.interval_s))

    @property
    def active_count(self) -> int:
        """Invocations still being polled."""
        return sum(1 for state in self._states.values() if not state.done)

    def last_polled_ms(self) -> dict[str, int]:
        """When each invocation was last polled (0 for never, in this run)."""
        return {k: s.last_polled_ms for k, s in self._states.items() if s.last_polled_ms}

    def snapshots(self) -> dict[str, Snapshot | None]:
        """The in-memory snapshot of every tracked invocation."""
        return {key: state.snapshot for key, state in self._states.items()}

    # -- the queue -------------------------------------------------------------------------

    def _schedule(self, state: PollState, delay_s: float) -> None:
        self._counter += 1
        due = self._clock.monotonic() + delay_s
        heapq.heappush(self._queue, (due, self._counter, state.ref.key, state.generation))
        if due < self._sleep_until:
            self._wake()  # due before the run loop meant to look again

    def next_due_in_s(self) -> float | None:
        """Seconds until the earliest scheduled poll, or None if nothing is scheduled."""
        while self._queue:
            due, _, key, generation = self._queue[0]
            state = self._states.get(key)
            if state is None or state.generation != generation or state.done:
                heapq.heappop(self._queue)
                continue
            return max(0.0, due - self._clock.monotonic())
        return None

    def pop_due(self, limit: int | None = None) -> list[str]:
        """Keys whose poll is due now (at most ``limit``), removed from the queue."""
        now = self._clock.monotonic()
        keys: list[str] = []
        while self._queue and self._queue[0][0] <= now and (limit is None or len(keys) < limit):
            due, _, key, generation = heapq.heappop(self._queue)
            state = self._states.get(key)
            if state is not None and state.generation == generation and not state.done:
                keys.append(key)
                if self._metrics is not None:
                    self._metrics.scheduling_lag.observe(now - due)
                if self._on_lag is not None:
                    self._on_lag(now - due)
        return keys

    # -- one poll --------------------------------------------------------------------------

    async def poll(self, key: str) -> PollOutcome:
        """Poll one invocation, commit what changed, and schedule its next poll."""
        async with self._semaphore:
            return await self._poll_admitted(key)

    async def _poll_admitted(self, key: str) -> PollOutcome:
        # Called with a concurrency slot held: the semaphore's, or one of ``run``'s.
        state = self._states[key]
        if self._bucket is not None:
            delay = self._bucket.delay_s()
            if delay > 0:
                await asyncio.sleep(delay)
        try:
            outcome, retry_after_s = await self._poller.poll(state)
        except Exception as exc:  # a bug, not FC: keep polling this one, and say so loudly
            state.failures += 1
            _log.error(
                "poll_crashed",
                invocation_id=state.ref.invocation_id,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            outcome, retry_after_s = PollOutcome.FAILED, None
        self.outcomes[outcome] += 1
        self.last_poll_finished_s = self._clock.monotonic()
        if self._poll_counters:
            self._poll_counters[outcome].inc()
        state.last_polled_ms = self._clock.wall_ms()
        if key in self._states:  # not dropped by a reload meanwhile
            self._reschedule(state, outcome, retry_after_s)
        return outcome

    def _reschedule(
        self, state: PollState, outcome: PollOutcome, retry_after_s: float | None
    ) -> None:
        settings = self._settings
        if outcome is PollOutcome.FAILED:
            delay = backoff_s(
                state.failures,
                base_s=settings.backoff_base_s,
                cap_s=settings.backoff_cap_s,
                rng=self._rng,
                retry_after_s=retry_after_s,
            )
            self._schedule(state, delay)
            return
        if outcome is PollOutcome.AUTH_FAILED:
            self._schedule(state, jittered_s(settings.max_interval_s, settings.jitter, self._rng))
            return
        if outcome is PollOutcome.NOT_FOUND:
            if self._forgotten(state.snapshot):
                state.done = True
                _log.warning("invocation_forgotten", invocation_id=state.ref.invocation_id)
                return
            reported = state.snapshot is not None and state.snapshot.not_found_reported
            base = settings.max_interval_s if reported else settings.interval_s
            self._schedule(state, jittered_s(base, settings.jitter, self._rng))
            return
        if is_finished(state.snapshot, state.terminal_polls):
            state.done = True
            return
        state.interval_s = adapt_interval_s(
            state.interval_s,
            changed=outcome is PollOutcome.CHANGED,
            interval_s=settings.interval_s,
            max_interval_s=settings.max_interval_s,
        )
        self._schedule(state, jittered_s(state.interval_s, settings.jitter, self._rng))

    # -- driving it ------------------------------------------------------------------------

    async def poll_due(self) -> list[PollOutcome]:
        """Poll every invocation due now, concurrently, and wait for all of them."""
        keys = self.pop_due()
        return list(await asyncio.gather(*(self.poll(key) for key in keys)))

    async def poll_all(self) -> list[PollOutcome]:
        """Poll every active invocation once, now (``fc-watcher once``)."""
        keys = [key for key, state in self._states.items() if not state.done]
        for key in keys:
            self._states[key].generation += 1  # drop their queued entries
        return list(await asyncio.gather(*(self.poll(key) for key in keys)))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then let in-flight polls finish within the stop bound."""
        loop = asyncio.get_running_loop()
        inflight: set[asyncio.Task[None]] = set()
        stop_waiter = asyncio.ensure_future(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake())

        def finished(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if self._at_capacity:
                self._at_capacity = False
                self._wake()  # a slot is free for an overdue poll

        async def poll_while_due(key: str) -> None:
            # A slot, once taken, goes straight on to the next overdue poll: when polls are
            # behind, that saves a task and a turn of this loop per poll.
            while True:
                await self._poll_admitted(key)
                if stop.is_set() or len(inflight) > self._settings.concurrency:
                    return  # stopping, or a reload lowered the concurrency
                more = self.pop_due(1)
                if not more:
                    return
                key = more[0]

        try:
            while not stop.is_set():
                # Polls start only when a slot is free: overdue ones wait on the heap, in due
                # order, rather than as thousands of tasks parked on the semaphore (which cost
                # CPU on every hand-over, and would hide the wait from the lag measure).
                free = self._settings.concurrency - len(inflight)
                for key in self.pop_due(free) if free > 0 else ():
                    task = asyncio.create_task(poll_while_due(key))
                    inflight.add(task)
                    task.add_done_callback(finished)
                wait_s = self.next_due_in_s()
                timeout_s = 1.0 if wait_s is None else min(max(wait_s, 0.001), 1.0)
                # A bare future and one timer per wait: this loop turns up to thousands of
                # times a second, and wait_for's extra task per turn showed in profiles.
                self._sleeper = loop.create_future()
                if len(inflight) >= self._settings.concurrency and wait_s is not None:
                    # Full: only a finished poll can start another, so new due times must
                    # not wake the loop; ``finished`` will.
                    self._at_capacity = True
                    self._sleep_until = -math.inf
                    timeout_s = 1.0
                else:
                    self._sleep_until = self._clock.monotonic() + timeout_s
                timer = loop.call_later(timeout_s, self._wake)
                await self._sleeper
                timer.cancel()
        finally:
            stop_waiter.cancel()
            self._sleeper = None
        await self._finish(inflight)

    def _wake(self) -> None:
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)

    async def _finish(self, inflight: Iterable[asyncio.Task[None]]) -> None:
        tasks = list(inflight)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._settings.stop_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        _log.info("polls_stopped", finished=len(tasks) - len(pending), cancelled=len(pending))
