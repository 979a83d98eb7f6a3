"""The poll scheduler: who is due, polling them concurrently, and when to poll each again.

Due ones are polled at most ``concurrency`` at a time; overdue ones wait in due order for a
free slot. One poll is the ``Poller``'s, the request budget the shared ``ApiLimiter``'s, the
next delay ``cadence``'s (pure), membership the sources'. Time is an injected ``Clock``, so
tests drive it tick by tick with ``poll_due``; ``run`` is the daemon loop around it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import structlog
from structlog.contextvars import bound_contextvars

from watcher.config.models import PollSettings, Tracked
from watcher.core.clock import Clock, SystemClock
from watcher.core.invocation import FunctionRef
from watcher.core.listing import is_scan_watched
from watcher.core.model import Snapshot
from watcher.engine.bounded import gather_bounded
from watcher.engine.cadence import forgotten, next_delay_s
from watcher.engine.membership import TrackedSet
from watcher.engine.ownership import Ownership
from watcher.engine.poll import Poller, PollOutcome, PollState, is_finished
from watcher.engine.queue import DueQueue
from watcher.engine.run_loop import RunLoop
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.scheduler")

_SEEN = (PollOutcome.CHANGED, PollOutcome.UNCHANGED)


class Scheduler(RunLoop):
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
        ownership: Ownership | None = None,
    ) -> None:
        self._poller = poller
        self._ownership = ownership  # a replica's (PostgreSQL): it polls its slots only
        self._settings = settings
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._metrics = metrics
        # A child per outcome, made once: every series shows at once, no label lookup a poll.
        polls = metrics.polls if metrics is not None else None
        self._poll_counters = (
            {o: polls.labels(o.value) for o in PollOutcome} if polls is not None else {}
        )
        self._on_lag = on_lag
        self.tracked = TrackedSet(settings.max_tracked)
        self._states = self.tracked.states  # the same dict: the hot path reads it directly
        self.scanned: set[FunctionRef] = set()
        """Functions whose active invocations a scan watches (no Gets while unchanged)."""
        self._generation = 0
        self._queue = DueQueue(self._is_current)
        RunLoop.__init__(self)
        self.outcomes: Counter[PollOutcome] = Counter()
        self.last_poll_finished_s: float | None = None
        """Monotonic time of the last completed poll (for readiness)."""

    @property
    def settings(self) -> PollSettings:
        return self._settings

    @property
    def clock(self) -> Clock:
        return self._clock

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
        schedule: bool = True,
    ) -> None:
        """Poll these for ``source``: new ones are added, known ones get the new labels.

        ``schedule=False`` leaves new ones unscheduled: the caller polls them now itself.
        """
        tracked = self.tracked
        for item in items:
            key = item.ref.key
            if tracked.claim(source, key):
                self._states[key].take_settings(item)
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
            if not tracked.add(source, state):
                continue
            if not state.done and schedule and not self._scan_watched(state):
                delay_s = self._rng.uniform(0, self._settings.interval_s) if spread else 0.0
                self._schedule(state, delay_s)

    def untrack(self, source: str, keys: Iterable[str]) -> None:
        """``source`` lets these go; each is dropped once no source tracks it (its queue
        entries go stale: they are skipped by key lookup)."""
        for key in keys:
            self.tracked.release(source, key)

    def is_tracked(self, key: str) -> bool:
        return key in self._states

    def function_states(self, function_ref: FunctionRef) -> list[PollState]:
        """The tracked invocations of one function (for its scan)."""
        return list(self.tracked.of_function(function_ref))

    def set_scanned(self, function_ref: FunctionRef, scanned: bool) -> None:
        """Whether a scan watches ``function_ref``'s active invocations. Turned on, their
        queued Gets are dropped; turned off (the scan fails), they are polled again by Get."""
        if scanned == (function_ref in self.scanned):
            return
        if scanned:
            self.scanned.add(function_ref)
        else:
            self.scanned.discard(function_ref)
        for state in self.tracked.of_function(function_ref):
            if not state.done and is_scan_watched(state.snapshot):
                if scanned:
                    self._generation += 1
                    state.generation = self._generation  # its queued Get goes stale
                else:
                    self._schedule(state, self._rng.uniform(0, self._settings.interval_s))

    def _scan_watched(self, state: PollState) -> bool:
        return state.ref.function_ref in self.scanned and is_scan_watched(state.snapshot)

    async def poll_now(self, keys: Iterable[str]) -> dict[str, PollOutcome]:
        """Poll these now (a scan saw them change, appear or go missing), whatever their
        schedule: their queued entries go stale, and each is rescheduled after its poll."""
        wanted = [key for key in keys if key in self._states]
        for key in wanted:
            self._generation += 1
            self._states[key].generation = self._generation
        outcomes = await gather_bounded(self.poll, wanted, self._settings.concurrency)
        return dict(zip(wanted, outcomes, strict=True))

    async def observe_unchanged(self, keys: Iterable[str]) -> None:
        """A scan saw these unchanged: as an unchanged poll would, check whether they are
        stuck (being stuck is precisely nothing changing)."""
        now_ms = self._clock.wall_ms()
        for key in keys:
            state = self._states.get(key)
            ownership = self._ownership
            if state is not None and (ownership is None or ownership.take_fence(state)):
                state.last_polled_ms = now_ms
                await self._poller.check_stuck(state)

    def spread_first_polls(self) -> None:
        """Re-spread every pending poll uniformly over one interval (no herd at start)."""
        self._queue.clear()
        self.spread(self._states.values())

    def spread(self, states: Iterable[PollState]) -> None:
        """Poll these within one interval (at start; as a replica, when their slot comes)."""
        for state in states:
            if not state.done and not self._scan_watched(state):
                self._schedule(state, self._rng.uniform(0, self._settings.interval_s))

    @property
    def active_count(self) -> int:
        """Invocations still being polled (as a replica: by this one, readiness asks)."""
        if self._ownership is not None:
            return self._ownership.count_active(self._states.values())
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
        if state.polling:  # a scan asked while its Get was under way: that one counts
            return PollOutcome.UNCHANGED
        if self._ownership is not None and not self._ownership.take_fence(state):
            return PollOutcome.UNCHANGED  # another replica's: ``spread`` when its slot comes
        state.polling = True
        try:
            outcome, retry_after_s = await self._poller.poll(state)
        except Exception as exc:  # a bug, not FC: keep polling this one, and say so loudly
            state.failures += 1
            with bound_contextvars(invocation_id=state.ref.invocation_id):
                _log.error("poll_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            outcome, retry_after_s = PollOutcome.FAILED, None
        finally:
            state.polling = False
        self.outcomes[outcome] += 1
        self.last_poll_finished_s = self._clock.monotonic()
        if self._poll_counters:
            self._poll_counters[outcome].inc()
        state.last_polled_ms = self._clock.wall_ms()
        if self._states.get(key) is state:  # not dropped by a reload meanwhile
            if outcome in _SEEN and self._scan_watched(state):
                return outcome  # its function's scan watches it from here: no Get schedule
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
