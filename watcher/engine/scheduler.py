"""The poll scheduler: who is due, polling them concurrently, and when to poll each again.

Due ones are polled at most ``concurrency`` at a time; overdue ones wait in due order for a
free slot. One poll is the ``Poller``'s, the request budget the shared ``ApiLimiter``'s, the
next delay ``cadence``'s (pure), membership the sources'. Time is an injected ``Clock``, so
tests drive it tick by tick with ``poll_due``; ``run`` is the daemon loop around it.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import structlog
from structlog.contextvars import bound_contextvars

from watcher.config.models import PollSettings, Tracked
from watcher.core.clock import Clock, SystemClock
from watcher.core.model import Snapshot
from watcher.engine.bounded import finish_within, gather_bounded
from watcher.engine.cadence import forgotten, next_delay_s
from watcher.engine.poll import Poller, PollOutcome, PollState, is_finished
from watcher.engine.queue import DueQueue
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.scheduler")


class Scheduler:
    """Owns the due-time queue and the per-invocation polling state; polls through a
    ``Poller`` it is given."""

    def __init__(
        self,
        poller: Poller,
        *,
        settings: PollSettings,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._poller = poller
        self._settings = settings
        self._clock = clock or SystemClock()
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
        self._states: dict[str, PollState] = {}
        self._owners: dict[str, set[str]] = {}
        """Which sources track each key: it is dropped when the last one lets go."""
        self._generation = 0
        self._queue = DueQueue(self._is_current)
        self._sleeper: asyncio.Future[None] | None = None
        self._sleep_until = float("inf")
        self._at_capacity = False
        self.outcomes: Counter[PollOutcome] = Counter()
        self.last_poll_finished_s: float | None = None
        """Monotonic time of the last completed poll (for readiness)."""

    def set_settings(self, settings: PollSettings) -> None:
        """New poll settings (reload); a new concurrency applies to polls started from now."""
        self._settings = settings

    # -- membership (``watcher.engine.sources.Membership``) ------------------------------------

    def track(
        self,
        source: str,
        items: Iterable[Tracked],
        snapshots: Mapping[str, Snapshot],
        *,
        spread: bool = True,
    ) -> None:
        """Poll these for ``source``: new ones are added, known ones get the new labels."""
        for item in items:
            key = item.ref.key
            self._owners.setdefault(key, set()).add(source)
            current = self._states.get(key)
            if current is not None:
                current.take_settings(item)
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
            state.done = is_finished(snapshot, 0) or forgotten(
                snapshot, self._settings, self._clock.wall_ms()
            )
            self._states[key] = state
            if not state.done:
                delay_s = self._rng.uniform(0, self._settings.interval_s) if spread else 0.0
                self._schedule(state, delay_s)

    def untrack(self, source: str, keys: Iterable[str]) -> None:
        """``source`` lets these go; each is dropped once no source tracks it."""
        for key in keys:
            owners = self._owners.get(key)
            if owners is None:
                continue
            owners.discard(source)
            if not owners:
                del self._owners[key]
                del self._states[key]  # its queue entries go stale: skipped by key lookup

    def spread_first_polls(self) -> None:
        """Re-spread every pending poll uniformly over one interval (no herd at start)."""
        self._queue.clear()
        for state in self._states.values():
            if not state.done:
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

    def poll_errors(self) -> dict[str, str]:
        """Why each invocation whose last poll failed failed."""
        return {key: state.last_error for key, state in self._states.items() if state.last_error}

    # -- the queue -----------------------------------------------------------------------------

    def _is_current(self, key: str, generation: int) -> bool:
        state = self._states.get(key)
        return state is not None and state.generation == generation and not state.done

    def _schedule(self, state: PollState, delay_s: float) -> None:
        # A scheduler-wide generation, so a key untracked and tracked again never revives
        # its old queue entries.
        self._generation += 1
        state.generation = self._generation
        due_s = self._clock.monotonic() + delay_s
        self._queue.push(state.ref.key, state.generation, due_s)
        if due_s < self._sleep_until:
            self._wake()  # due before the run loop meant to look again

    def next_due_in_s(self) -> float | None:
        """Seconds until the earliest scheduled poll, or None if nothing is scheduled."""
        due_s = self._queue.earliest_s()
        return None if due_s is None else max(0.0, due_s - self._clock.monotonic())

    def pop_due(self, limit: int | None = None) -> list[str]:
        """Keys whose poll is due now (at most ``limit``), removed from the queue."""
        due = self._queue.pop_due(self._clock.monotonic(), limit)
        for _, lag_s in due:
            if self._metrics is not None:
                self._metrics.scheduling_lag.observe(lag_s)
            if self._on_lag is not None:
                self._on_lag(lag_s)
        return [key for key, _ in due]

    # -- one poll ------------------------------------------------------------------------------

    async def poll(self, key: str) -> PollOutcome:
        """Poll one invocation, commit what changed, and schedule its next poll."""
        state = self._states[key]
        try:
            outcome, retry_after_s = await self._poller.poll(state)
        except Exception as exc:  # a bug, not FC: keep polling this one, and say so loudly
            state.failures += 1
            with bound_contextvars(invocation_id=state.ref.invocation_id):
                _log.error("poll_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            outcome, retry_after_s = PollOutcome.FAILED, None
        self.outcomes[outcome] += 1
        self.last_poll_finished_s = self._clock.monotonic()
        if self._poll_counters:
            self._poll_counters[outcome].inc()
        state.last_polled_ms = self._clock.wall_ms()
        if self._states.get(key) is state:  # not dropped by a reload meanwhile
            self._reschedule(state, outcome, retry_after_s)
        return outcome

    def _reschedule(
        self, state: PollState, outcome: PollOutcome, retry_after_s: float | None
    ) -> None:
        gone = outcome is PollOutcome.NOT_FOUND and forgotten(
            state.snapshot, self._settings, self._clock.wall_ms()
        )
        settings, rng = self._settings, self._rng
        delay_s = next_delay_s(
            state, outcome, retry_after_s, settings=settings, rng=rng, forgotten_now=gone
        )
        if delay_s is not None:
            self._schedule(state, delay_s)
            return
        state.done = True
        if outcome is PollOutcome.NOT_FOUND:
            _log.warning("invocation_forgotten", invocation_id=state.ref.invocation_id)

    # -- driving it ----------------------------------------------------------------------------

    async def poll_due(self) -> list[PollOutcome]:
        """Poll every invocation due now, concurrently, and wait for all of them."""
        return await gather_bounded(self.poll, self.pop_due(), self._settings.concurrency)

    async def poll_all(self) -> list[PollOutcome]:
        """Poll every active invocation once, now (``fc-watcher once``)."""
        keys = [key for key, state in self._states.items() if not state.done]
        for key in keys:
            self._generation += 1
            self._states[key].generation = self._generation  # drop their queued entries
        return await gather_bounded(self.poll, keys, self._settings.concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then let in-flight polls finish within the stop bound."""
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
                await self.poll(key)
                if stop.is_set() or len(inflight) > self._settings.concurrency:
                    return  # stopping, or a reload lowered the concurrency
                more = self.pop_due(1)
                if not more:
                    return
                key = more[0]

        try:
            while not stop.is_set():
                # Polls start only when a slot is free: overdue ones wait on the heap, in due
                # order, rather than as thousands of tasks parked on a semaphore (which cost
                # CPU on every hand-over, and would hide the wait from the lag measure).
                free = self._settings.concurrency - len(inflight)
                for key in self.pop_due(free) if free > 0 else ():
                    task = asyncio.create_task(poll_while_due(key))
                    inflight.add(task)
                    task.add_done_callback(finished)
                await self._sleep(full=len(inflight) >= self._settings.concurrency)
        finally:
            stop_waiter.cancel()
            self._sleeper = None
        done, cancelled = await finish_within(inflight, self._settings.stop_timeout_s)
        if done or cancelled:
            _log.info("polls_stopped", finished=done, cancelled=cancelled)

    async def _sleep(self, *, full: bool) -> None:
        """Wait until a poll is due, a slot frees up (when ``full``), or a second passed."""
        loop = asyncio.get_running_loop()
        wait_s = self.next_due_in_s()
        timeout_s = 1.0 if wait_s is None else min(max(wait_s, 0.001), 1.0)
        # A bare future and one timer per wait: this loop turns up to thousands of times a
        # second, and wait_for's extra task per turn showed in profiles.
        self._sleeper = loop.create_future()
        if full and wait_s is not None:
            # Only a finished poll can start another, so new due times must not wake the
            # loop; ``finished`` will.
            self._at_capacity = True
            self._sleep_until = -math.inf
            timeout_s = 1.0
        else:
            self._sleep_until = self._clock.monotonic() + timeout_s
        timer = loop.call_later(timeout_s, self._wake)
        await self._sleeper
        timer.cancel()

    def _wake(self) -> None:
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)
