"""The scheduler on an injected clock, polling the emulator over loopback tick by tick."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from tests.conftest import ACCESS_KEY_ID, EmulatorFactory, RunningEmulator, emulator_config
from watcher.config.models import Tracked
from watcher.core.clock import Clock, SystemClock
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import TransitionType
from watcher.core.route import route
from watcher.daemon.build import Parts, build
from watcher.engine.limiter import TokenBucket
from watcher.engine.poll import PollOutcome
from watcher.fc.credentials import Credentials, StaticCredentialSource
from watcher.store.sqlite import SqliteStore

FN = FunctionRef(Api.FC2, "demo-function", "demo-service", "LATEST")
WALL_BASE_MS = 1_795_680_000_000
LOG_ONLY = functools.partial(route, routes=[], log_sinks=["log"])


class FakeClock:
    """Scheduler time that moves only when a test says so."""

    def __init__(self, base_ms: int = WALL_BASE_MS) -> None:
        self.now_s = 0.0
        self.base_ms = base_ms

    def monotonic(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return self.base_ms + int(self.now_s * 1000)


class Harness:
    """Parts built by the composition root, with their store and fake clock, moved together
    with the emulator's clock."""

    def __init__(self, parts: Parts, clock: FakeClock, emu: RunningEmulator) -> None:
        assert isinstance(parts.store, SqliteStore), "the harness builds on a SqliteStore"
        self.parts = parts
        self.client = parts.client
        self.scheduler = parts.scheduler
        self.store: SqliteStore = parts.store
        self.clock = clock
        self.emu = emu

    def advance(self, seconds: float) -> None:
        self.clock.now_s += seconds
        self.emu.clock.advance(seconds)

    async def step(self) -> list[PollOutcome]:
        """Jump to the next due poll and run everything due then."""
        wait = self.scheduler.next_due_in_s()
        assert wait is not None, "nothing scheduled"
        self.advance(wait)
        return await self.scheduler.poll_due()

    async def types(self) -> list[str]:
        return [t.type.value for t in await self.store.transitions()]


async def build_for(
    emu: RunningEmulator,
    store: SqliteStore,
    session: aiohttp.ClientSession,
    ids: list[str],
    *,
    clock: Clock,
    poll: dict[str, Any],
    credentials: Credentials | None = None,
    on_lag: Callable[[float], None] | None = None,
) -> Parts:
    """Parts for the emulator through ``build``, as the daemon wires itself; only a log sink,
    so every transition is routed to it (no routes)."""
    config = emulator_config(emu.url, store.path, poll=poll)
    return await build(
        config,
        [Tracked(ref=InvocationRef(FN, i), labels={}) for i in ids],
        store=store,
        session=session,
        clock=clock,
        rng=random.Random(1),
        metrics=None,
        credentials=StaticCredentialSource(credentials) if credentials else None,
        on_lag=on_lag,
    )


class MakeHarness(Protocol):
    """The ``harness`` fixture: a ``Harness`` over an emulator serving ``invocations``."""

    async def __call__(
        self,
        invocations: list[dict[str, Any]],
        *,
        ids: list[str] | None = None,
        faults: list[dict[str, Any]] | None = None,
        credentials: Credentials | None = None,
        **poll: Any,
    ) -> Harness: ...


@pytest.fixture
async def harness(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[MakeHarness]:
    stores: list[SqliteStore] = []

    async def make(
        invocations: list[dict[str, Any]],
        *,
        ids: list[str] | None = None,
        faults: list[dict[str, Any]] | None = None,
        credentials: Credentials | None = None,
        **poll: Any,
    ) -> Harness:
        emu = await start_emulator(invocations=invocations, faults=faults or [])
        store = await SqliteStore.open(tmp_path / f"state-{len(stores)}.db")
        stores.append(store)
        clock = FakeClock(emu.emulator.app.epoch_ms)  # FC timestamps and ours agree
        poll_settings = {"interval_s": 10, "max_interval_s": 60, "jitter": 0, **poll}
        ids_ = ids or [spec["id"] for spec in invocations]
        parts = await build_for(
            emu, store, http_session, ids_, clock=clock, poll=poll_settings, credentials=credentials
        )
        return Harness(parts, clock, emu)

    yield make
    for store in stores:
        await store.close()


RUNNING = [{"at_s": 0, "status": "Running"}]


async def test_first_polls_are_spread_over_one_interval(harness: MakeHarness) -> None:
    """After start-up, 200 first polls spread over the interval instead of all at once."""
    h = await harness([{"id": f"job-{i}", "timeline": RUNNING} for i in range(200)])
    h.scheduler.spread_first_polls()
    due_per_second = []
    for _ in range(10):
        h.advance(1)
        due_per_second.append(len(h.scheduler.pop_due()))
    assert sum(due_per_second) == 200
    assert max(due_per_second) < 45  # uniform would be ~20 a second


async def test_interval_backs_off_while_unchanged_and_resets_on_change(
    harness: MakeHarness,
) -> None:
    """A long runner is polled ever less often, up to max_interval_s; a change resets it."""
    h = await harness(
        [
            {
                "id": "job-1",
                "timeline": [
                    {"at_s": 0, "status": "Running"},
                    {"at_s": 300, "status": "Succeeded"},
                ],
            }
        ]
    )
    waits = []
    for _ in range(7):
        await h.scheduler.poll_due()
        wait = h.scheduler.next_due_in_s()
        assert wait is not None
        waits.append(round(wait, 3))
        h.advance(wait)
    assert waits == [10, 15, 22.5, 33.75, 50.625, 60, 60]
    h.advance(300 - h.clock.now_s)
    await h.scheduler.poll_due()
    assert h.scheduler.active_count == 0  # terminal with its final event: polled no more
    assert (await h.types())[-1] == TransitionType.STATUS_CHANGED.value


async def test_throttling_backs_off_at_least_retry_after(harness: MakeHarness) -> None:
    """A 429 with Retry-After: 7 is not polled again for at least 7 s."""
    h = await harness(
        [{"id": "job-1", "timeline": RUNNING}],
        faults=[{"kind": "http_error", "status": 429, "retry_after_s": 7}],
        backoff_base_s=0.5,
    )
    assert await h.scheduler.poll_due() == [PollOutcome.FAILED]
    wait = h.scheduler.next_due_in_s()
    assert wait is not None
    assert wait >= 7


async def test_retryable_errors_back_off_exponentially(harness: MakeHarness) -> None:
    """Consecutive 500s are retried under a ceiling that doubles each time (full jitter)."""
    h = await harness(
        [{"id": "job-1", "timeline": RUNNING}],
        faults=[{"kind": "http_error", "status": 500}],
        backoff_base_s=1,
        backoff_cap_s=16,
        failure_threshold=100,
    )
    waits = []
    for _ in range(8):
        assert await h.scheduler.poll_due() == [PollOutcome.FAILED]
        wait = h.scheduler.next_due_in_s()
        assert wait is not None
        waits.append(wait)
        h.advance(wait)
    ceilings = [min(16, 2**n) for n in range(8)]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert max(waits[4:]) > 2  # the ceiling really grew


async def test_poll_failing_once_then_recovered(harness: MakeHarness) -> None:
    """Failures past the threshold emit poll_failing once; the first success emits recovered."""
    h = await harness(
        [{"id": "job-1", "timeline": RUNNING}],
        faults=[{"kind": "http_error", "status": 503, "from_s": 5, "until_s": 200}],
        failure_threshold=3,
        backoff_base_s=1,
        backoff_cap_s=10,
    )
    await h.scheduler.poll_due()
    h.advance(5)
    for _ in range(8):
        await h.step()
    assert (await h.types()).count(TransitionType.POLL_FAILING.value) == 1
    h.advance(200 - h.clock.now_s)
    await h.step()
    assert (await h.types())[-1] == TransitionType.POLL_RECOVERED.value


async def test_not_found_grace_report_then_slow_then_forget(harness: MakeHarness) -> None:
    """Not found is retried, reported once, polled slowly, and forgotten after forget_after_s."""
    h = await harness(
        [{"id": "late-1", "appears_at_s": None}],
        not_found_retries=3,
        forget_after_s=1000,
    )
    for _ in range(2):
        await h.step()
    assert await h.types() == []
    await h.step()
    assert await h.types() == [TransitionType.NOT_FOUND.value]
    assert h.scheduler.next_due_in_s() == pytest.approx(60)  # slow after reporting
    while h.scheduler.active_count:
        await h.step()
    assert h.clock.now_s > 1000
    assert await h.types() == [TransitionType.NOT_FOUND.value]


async def test_a_late_invocation_is_still_caught(harness: MakeHarness) -> None:
    """One that appears after not_found was reported is still followed to its end."""
    h = await harness(
        [{"id": "late-1", "appears_at_s": 100, "timeline": [{"at_s": 100, "status": "Failed"}]}],
        not_found_retries=2,
    )
    while h.scheduler.active_count:
        await h.step()
    assert await h.types() == [
        TransitionType.NOT_FOUND.value,
        TransitionType.EVENT.value,
        TransitionType.STATUS_CHANGED.value,
    ]


async def test_a_poll_that_crashes_is_logged_and_the_invocation_kept(
    harness: MakeHarness,
) -> None:
    """An unexpected error inside a poll (a bug, not FC) fails that poll only: it is logged with
    the invocation, backed off like any failure, and the invocation is still followed."""
    h = await harness([{"id": "job-1", "timeline": RUNNING}])
    real = h.client
    crashes = iter([RuntimeError("bug in the poll path")])

    class CrashOnce:
        async def get_invocation_body(self, ref: InvocationRef) -> bytes:
            crash = next(crashes, None)
            if crash is not None:
                raise crash
            return await real.get_invocation_body(ref)

    h.parts.poller.client = CrashOnce()
    with capture_logs(processors=[merge_contextvars]) as logs:
        assert await h.step() == [PollOutcome.FAILED]
        assert await h.step() == [PollOutcome.CHANGED]
    crashed = [entry for entry in logs if entry["event"] == "poll_crashed"]
    assert [entry["invocation_id"] for entry in crashed] == ["job-1"]
    assert "RuntimeError: bug in the poll path" in crashed[0]["error"]
    # The second poll is the first sighting: no poll_failing for a single failed poll.
    assert await h.types() == [TransitionType.EVENT.value, TransitionType.STATUS_CHANGED.value]


async def test_auth_failure_is_reported_once(harness: MakeHarness) -> None:
    """Bad credentials: one fc_auth_failed line for all invocations and polls, no transitions."""
    h = await harness(
        [{"id": f"job-{i}", "timeline": RUNNING} for i in range(5)],
        credentials=Credentials(ACCESS_KEY_ID, "wrong-secret"),
    )
    with capture_logs() as logs:
        for _ in range(3):
            await h.step()
    assert [entry["event"] for entry in logs].count("fc_auth_failed") == 1
    assert "wrong-secret" not in repr(logs)
    assert await h.types() == []


async def test_unchanged_poll_writes_nothing(harness: MakeHarness, tmp_path: Path) -> None:
    """After the first poll, identical bodies touch neither the DB nor its WAL."""
    h = await harness([{"id": "job-1", "timeline": RUNNING}])
    await h.scheduler.poll_due()
    changes = await h.store.total_changes()
    files = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.glob("state-0.db*")}
    for _ in range(5):
        assert await h.step() == [PollOutcome.UNCHANGED]
    assert await h.store.total_changes() == changes
    assert {
        p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.glob("state-0.db*")
    } == files


async def test_concurrency_cap_is_respected(harness: MakeHarness) -> None:
    """With concurrency 4, at most 4 requests are in flight at the emulator."""
    h = await harness(
        [{"id": f"job-{i}", "timeline": RUNNING} for i in range(20)],
        faults=[{"kind": "latency", "latency_ms": 50}],
        concurrency=4,
    )
    outcomes = await h.scheduler.poll_due()
    assert len(outcomes) == 20
    assert h.emu.stats["max_inflight"] == 4


async def test_run_when_behind_keeps_the_cap_and_serves_overdue_polls_in_due_order(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """20 invocations due every 50 ms, 4 slots, 20 ms per request: ``run`` is always behind.

    It never has more than 4 requests in flight, and because overdue polls start in due order
    every invocation gets its turn: the poll counts differ by at most one round.
    """
    ids = [f"job-{i:02d}" for i in range(20)]
    emu = await start_emulator(
        invocations=[{"id": i, "timeline": RUNNING} for i in ids],
        faults=[{"kind": "latency", "latency_ms": 20}],
    )
    lags_s: list[float] = []
    store = await SqliteStore.open(tmp_path / "state.db")
    parts = await build_for(
        emu,
        store,
        http_session,
        ids,
        clock=SystemClock(),
        poll={"interval_s": 0.05, "max_interval_s": 0.05, "jitter": 0, "concurrency": 4},
        on_lag=lags_s.append,
    )
    scheduler = parts.scheduler
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.5, stop.set)
    await scheduler.run(stop)
    await store.close()

    assert emu.stats["max_inflight"] == 4
    counts = [emu.stats[f"requests:{i}"] for i in ids]
    assert min(counts) >= 3, counts
    assert max(counts) - min(counts) <= 2, counts
    # The lag measure counts the wait for a slot: a round of 20 polls of at least 20 ms over
    # 4 slots takes at least 100 ms, and each is due 50 ms after its last one ended (>= 70 ms
    # after it started), so a typical poll starts at least 30 ms late. A slower machine only
    # makes that wait longer.
    assert sorted(lags_s)[len(lags_s) // 2] > 0.02


def test_token_bucket_spaces_requests() -> None:
    """At 5 requests/s, a burst of 5 passes, then each request waits a fifth of a second more."""
    clock = FakeClock()
    bucket = TokenBucket(5, clock)
    delays = [bucket.delay_s() for _ in range(8)]
    assert delays[:5] == [0, 0, 0, 0, 0]
    assert delays[5:] == pytest.approx([0.2, 0.4, 0.6])
    clock.now_s += 10
    assert bucket.delay_s() == 0


async def test_restart_resumes_from_the_store(
    harness: MakeHarness, http_session: aiohttp.ClientSession
) -> None:
    """A finished invocation is not polled again after a restart; a running one is."""
    h = await harness(
        [
            {"id": "done-1", "timeline": [{"at_s": 0, "status": "Succeeded"}]},
            {"id": "run-1", "timeline": RUNNING},
        ]
    )
    await h.scheduler.poll_due()
    again = (
        await build_for(h.emu, h.store, http_session, ["done-1", "run-1"], clock=h.clock, poll={})
    ).scheduler
    assert again.active_count == 1


async def test_stuck_invocation_is_reported_and_reminded(harness: MakeHarness) -> None:
    """Running past stuck_after_s emits invocation.stuck once, then every stuck_repeat_s."""
    h = await harness([{"id": "job-1", "timeline": RUNNING}])
    h.scheduler.track(
        "config",
        [Tracked(ref=InvocationRef(FN, "job-1"), labels={}, stuck_after_s=100, stuck_repeat_s=200)],
        {},
    )
    while h.clock.now_s < 620:
        await h.step()
    assert (await h.types()).count(TransitionType.STUCK.value) == 3  # at ~100 s, ~300 s and ~500 s
