"""Sources of tracked invocations and the shared API limiter, as ``build`` wires them."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp

from tests.conftest import EmulatorFactory, emulator_config
from watcher.config.models import Tracked
from watcher.core.clock import SystemClock
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.daemon.build import Parts, build
from watcher.engine.limiter import ApiLimiter
from watcher.store.sqlite import SqliteStore

FN = FunctionRef(Api.FC2, "demo-function", "demo-service", "LATEST")
RUNNING = [{"at_s": 0, "status": "Running"}]


class FakeClock:
    """Limiter time that does not move."""

    def monotonic(self) -> float:
        return 0.0

    def wall_ms(self) -> int:
        return 0


def _tracked(*ids: str) -> list[Tracked]:
    return [Tracked(ref=InvocationRef(FN, i), labels={}) for i in ids]


async def _parts(
    start_emulator: EmulatorFactory,
    session: aiohttp.ClientSession,
    state: Path,
    ids: list[str],
) -> Parts:
    emu = await start_emulator(invocations=[{"id": i, "timeline": RUNNING} for i in "abcd"])
    store = await SqliteStore.open(state)
    return await build(
        emulator_config(emu.url, state),
        _tracked(*ids),
        store=store,
        session=session,
        clock=SystemClock(),
        rng=random.Random(1),
        metrics=None,
    )


def _keys(parts: Parts) -> set[str]:
    return {key.rsplit("/", 1)[1] for key in parts.scheduler.snapshots()}


async def test_a_reload_changes_only_the_config_sources_members(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An invocation that another source also tracks survives the config dropping it; one
    only the config tracked is dropped; the other source's own members are untouched."""
    parts = await _parts(start_emulator, http_session, tmp_path / "state.db", ["a", "b"])
    try:
        parts.scheduler.track("discovery", _tracked("b", "c"), {})
        assert _keys(parts) == {"a", "b", "c"}
        parts.config_source.replace(_tracked("d"), parts.scheduler, {})
        assert _keys(parts) == {"b", "c", "d"}
        parts.scheduler.untrack("discovery", [InvocationRef(FN, "b").key])
        assert _keys(parts) == {"c", "d"}
        outcomes = await parts.scheduler.poll_all()
        assert len(outcomes) == 2  # what is tracked is what is polled
    finally:
        await parts.store.close()


async def test_an_invocation_tracked_again_is_polled_once_per_due_time(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Untracked and tracked again before its old due time: the old queue entry stays stale,
    so one due time yields one poll, not two."""
    parts = await _parts(start_emulator, http_session, tmp_path / "state.db", ["a"])
    try:
        key = InvocationRef(FN, "a").key
        parts.scheduler.untrack("config", [key])
        parts.scheduler.track("config", _tracked("a"), {}, spread=False)
        assert parts.scheduler.pop_due() == [key]
    finally:
        await parts.store.close()


async def _peak_inside(limiter: ApiLimiter, callers: int) -> int:
    """Run ``callers`` calls through ``limiter`` together; the most that were inside at once."""
    inside = peak = 0

    async def call() -> None:
        nonlocal inside, peak
        async with limiter:
            inside += 1
            peak = max(peak, inside)
            for _ in range(5):
                await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(call() for _ in range(callers)))
    return peak


async def test_limiter_caps_calls_and_follows_a_reload_both_ways() -> None:
    """Every caller shares one cap, and a reload's new cap, higher or lower, applies to the
    next request."""
    limiter = ApiLimiter(2, None, SystemClock())
    assert await _peak_inside(limiter, 10) == 2
    limiter.set_limits(5, None)
    assert await _peak_inside(limiter, 10) == 5
    limiter.set_limits(1, None)
    assert await _peak_inside(limiter, 10) == 1
    limiter.set_limits(3, None)
    assert await _peak_inside(limiter, 10) == 3
    assert limiter.in_flight == 0


async def test_limiter_passes_on_a_slot_whose_waiter_was_cancelled() -> None:
    """A waiter cancelled while queued, or just after being granted a slot, leaves no slot
    taken: the next caller still gets in."""
    limiter = ApiLimiter(1, None, SystemClock())
    await limiter.enter()
    queued = asyncio.ensure_future(limiter.enter())
    await asyncio.sleep(0)
    queued.cancel()
    limiter.leave()  # grants the slot to ``queued``, whose cancel then hands it back
    await asyncio.gather(queued, return_exceptions=True)
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.enter(), timeout=1)
    limiter.leave()
    assert limiter.in_flight == 0


async def test_limiter_rate_cap_spaces_requests_for_every_caller() -> None:
    """With a rate cap, requests from any caller take tokens from one bucket."""
    clock = FakeClock()
    limiter = ApiLimiter(10, 1000.0, clock)
    for _ in range(1000):  # one second's burst passes at once
        assert not limiter.try_enter()  # a capped limiter always goes the waiting way
        await limiter.enter()
        limiter.leave()
    waiting = asyncio.ensure_future(limiter.enter())  # the 1,001st waits for a token
    await asyncio.sleep(0)
    assert not waiting.done()
    await waiting
    limiter.leave()
    assert limiter.in_flight == 0
