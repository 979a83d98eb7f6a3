"""One poll of one invocation: fetch, skip when identical, decide, commit.

The scheduler decides when to poll and what comes next; ``Poller`` decides what a poll found
and persists it. A body byte-identical to the last one is neither parsed nor written (the
common case costs no disk); anything else goes through ``watcher.diff`` (pure) and, when it
changed something, into the store in one transaction with its outbox rows. Transitions record
the wall clock (when people read it); the outbox rows' times and the stuck age are on the steady
clock, so that a step of the wall clock neither ages a row nor makes a status look stuck.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog
from structlog.contextvars import bound_contextvars

from watcher.config.models import PollSettings
from watcher.core import decide
from watcher.core.clock import Clock, Since, steady
from watcher.core.invocation import InvocationRef
from watcher.core.model import Transition
from watcher.core.route import Target
from watcher.engine.limiter import ApiLimiter
from watcher.engine.ownership import Fencing
from watcher.engine.poll_state import PollOutcome, PollState, is_finished
from watcher.fc.errors import AuthError, FcError, NotFoundError, ThrottledError, outcome_label
from watcher.fc.models import parse_invocation
from watcher.store.errors import FencedError, StateStoreError
from watcher.store.protocols import PollStore
from watcher.telemetry.metrics import Metrics

# Re-exported: callers import these from here, where they lived before ``poll_state``.
__all__ = ["InvocationSource", "PollOutcome", "PollState", "Poller", "is_finished"]

_log = structlog.get_logger("watcher.poll")

Router = Callable[[Sequence[Transition]], Mapping[str, Sequence[Target]]]
"""Decides, for committed transitions, which sinks get them (``watcher.router.route``)."""
Routes = Mapping[str, Sequence[Target]]
Silencer = Callable[[Sequence[Transition], Routes], tuple[Routes, Mapping[str, str]]]
"""Given the routes of committed transitions: the routes without the alerting targets of the
silenced ones, and which silence holds each back (``watcher.daemon.silences``)."""


class InvocationSource(Protocol):
    """What a poll needs of the FC client."""

    async def get_invocation_body(self, ref: InvocationRef) -> bytes:
        """The raw Get body for ``ref``, or a typed ``FcError``."""
        ...


class Poller:
    """Does the polls the scheduler starts (many at once), and tracks whether FC accepts the
    key: one log line per authentication outage, not one per invocation."""

    def __init__(
        self,
        *,
        client: InvocationSource,
        store: PollStore,
        router: Router,
        settings: PollSettings,
        clock: Clock,
        limiter: ApiLimiter,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] = lambda: None,
        silencer: Silencer | None = None,
        fencing: Fencing | None = None,
    ) -> None:
        self.client = client
        self.router = router
        self.silencer = silencer
        self.settings = settings
        self._store = store
        self._clock = clock
        self._steady_ms = steady(clock)
        self._limiter = limiter
        self._metrics = metrics
        self._on_commit = on_commit
        self._auth_failing = False
        self._fencing = fencing
        self._get_ok = metrics.api_requests.labels("get", "ok") if metrics is not None else None

    async def poll(self, state: PollState) -> tuple[PollOutcome, float | None]:
        """Poll ``state``'s invocation and commit what changed: the outcome, and the delay FC
        asked for (Retry-After) if it throttled."""
        outcome, retry_after_s = await self._fetch_and_commit(state)
        if outcome in (PollOutcome.CHANGED, PollOutcome.UNCHANGED):
            await self.check_stuck(state)
        return outcome, retry_after_s

    async def _fetch_and_commit(self, state: PollState) -> tuple[PollOutcome, float | None]:
        try:
            started = time.perf_counter()
            try:
                limiter = self._limiter
                if not limiter.try_enter():
                    await limiter.enter()
                try:
                    body = await self.client.get_invocation_body(state.ref)
                except FcError as exc:
                    if self._metrics is not None:
                        self._metrics.api_requests.labels("get", outcome_label(exc)).inc()
                    raise
                finally:
                    limiter.leave()
                if self._get_ok is not None:
                    self._get_ok.inc()
            finally:
                if self._metrics is not None:
                    self._metrics.api_latency.observe(time.perf_counter() - started)
            state.last_error = ""
            digest = hashlib.blake2b(body, digest_size=16).digest()
            if digest == state.digest and not (state.snapshot and state.snapshot.failing):
                # The common case, and the hot path: nothing logged, so nothing bound.
                self._auth_ok()
                state.failures = 0
                return PollOutcome.UNCHANGED, None
            with bound_contextvars(invocation_id=state.ref.invocation_id):
                return await self._changed(state, body, digest), None
        except FcError as exc:
            with bound_contextvars(invocation_id=state.ref.invocation_id):
                return await self._failed(state, exc)

    async def _changed(self, state: PollState, body: bytes, digest: bytes) -> PollOutcome:
        invocation = parse_invocation(body)  # may raise BadResponseError
        self._auth_ok()
        result = decide.diff(
            state.snapshot,
            invocation,
            ref=state.ref,
            observed_ms=self._clock.wall_ms(),
            labels=state.labels,
        )
        if not await self._commit(state, result):
            return PollOutcome.FAILED
        state.digest = digest
        state.failures = 0
        state.terminal_polls = state.terminal_polls + 1 if invocation.is_terminal else 0
        return PollOutcome.CHANGED if result.transitions else PollOutcome.UNCHANGED

    async def _failed(self, state: PollState, exc: FcError) -> tuple[PollOutcome, float | None]:
        state.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, NotFoundError):
            self._auth_ok()
            state.failures = 0
            state.digest = None  # if it comes back, diff it: that resets the not-found count
            result = decide.not_found(
                state.snapshot,
                ref=state.ref,
                observed_ms=self._clock.wall_ms(),
                report_after=self.settings.not_found_retries,
                labels=state.labels,
            )
            committed = await self._commit(state, result)
            return (PollOutcome.NOT_FOUND if committed else PollOutcome.FAILED), None
        if isinstance(exc, AuthError):
            self._auth_failed(exc)
            return PollOutcome.AUTH_FAILED, None
        state.failures += 1
        _log.debug("poll_failed", error=str(exc), retryable=exc.retryable)
        result = decide.poll_failed(
            state.snapshot,
            ref=state.ref,
            observed_ms=self._clock.wall_ms(),
            consecutive_failures=state.failures,
            threshold=self.settings.failure_threshold,
            detail=f"{type(exc).__name__}: {exc}",
            labels=state.labels,
        )
        await self._commit(state, result)
        return PollOutcome.FAILED, exc.retry_after_s if isinstance(exc, ThrottledError) else None

    async def check_stuck(self, state: PollState) -> None:
        # Runs on unchanged polls too: being stuck is precisely nothing changing.
        if state.stuck_after_s is None or state.snapshot is None:
            return
        wall_ms, steady_ms = self._clock.wall_ms(), self._steady_ms()
        since_ms = state.snapshot.status_since_ms
        if state.since is None or state.since.at_ms != since_ms:
            state.since = Since(since_ms, wall_ms, steady_ms)
        result = decide.stuck(
            state.snapshot,
            ref=state.ref,
            now_ms=wall_ms,
            stuck_after_s=state.stuck_after_s,
            repeat_s=state.stuck_repeat_s,
            labels=state.labels,
            age_s=state.since.age_ms(steady_ms) / 1000,
        )
        if result.changed:
            with bound_contextvars(invocation_id=state.ref.invocation_id):
                await self._commit(state, result)

    async def _commit(self, state: PollState, result: decide.DiffResult) -> bool:
        """Persist a decision; on success adopt its snapshot. False if the store failed."""
        if not result.changed:
            state.snapshot = result.snapshot
            return True
        routes: Routes = self.router(result.transitions)
        silenced: Mapping[str, str] = {}
        if self.silencer is not None:  # decided now: a silenced row is never made, never sent
            routes, silenced = self.silencer(result.transitions, routes)
        try:
            fresh = await self._write(state, result, routes, silenced)
        except FencedError as exc:
            # Not this replica's any more: drop the slot now, no retries; whoever holds it
            # now polls it from the snapshot that is in the database.
            _log.info("commit_fenced", error=str(exc))
            if self._fencing is not None and state.fence is not None:
                self._fencing.ownership.drop(state.fence)
            return False
        except StateStoreError as exc:
            # The store reports each kind of write failure once per interval, with the fix;
            # one line per poll here would flood the log on a full disk.
            _log.debug("state_commit_failed", error=str(exc))
            return False
        state.snapshot = result.snapshot
        if fresh:
            if self._metrics is not None:
                for transition in fresh:
                    self._metrics.transitions.labels(transition.type.value).inc()
                    if transition.id in silenced:
                        self._metrics.transitions_silenced.labels(transition.type.value).inc()
            self._on_commit()
        return True

    async def _write(
        self,
        state: PollState,
        result: decide.DiffResult,
        routes: Routes,
        silenced: Mapping[str, str],
    ) -> list[Transition]:
        """One commit: fenced as a replica (PostgreSQL), plain on one host."""
        # The rows' creation and due times: the dispatcher reads the same steady clock.
        now_ms, transitions = self._steady_ms(), result.transitions
        if state.fence is None or self._fencing is None:
            return await self._store.commit(
                state.ref, result.snapshot, transitions=transitions, routes=routes,
                now_ms=now_ms, silenced=silenced,
            )  # fmt: skip
        return await self._fencing.store.commit_fenced(
            state.fence, state.ref, result.snapshot, transitions=transitions, routes=routes,
            now_ms=now_ms, silenced=silenced,
        )  # fmt: skip

    def _auth_ok(self) -> None:
        if self._auth_failing:
            self._auth_failing = False
            _log.info("fc_auth_recovered")

    def _auth_failed(self, exc: AuthError) -> None:
        # One loud line per outage, not one per invocation per poll.
        if not self._auth_failing:
            self._auth_failing = True
            _log.error(
                "fc_auth_failed",
                code=exc.code,
                error=exc.message,
                request_id=exc.request_id,
                hint="check the access key, its RAM permissions (fc:GetStatefulAsyncInvocation,"
                " fc:GetAsyncTask) and this machine's clock",
            )
