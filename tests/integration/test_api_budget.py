"""One API budget for every FC call: when it is short, every interval stretches evenly.

Against the emulator, with real time: the budget (``poll.api_budget_per_s``) is what limits
the polls here, so how evenly they are spread does not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import EmulatorFactory, RunningEmulator, emulator_fc
from watcher.config.models import Config, Tracked
from watcher.core.clock import SystemClock
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.daemon.build import Parts, build
from watcher.daemon.demand import api_demand, info_values
from watcher.daemon.status import render_status
from watcher.store.sqlite import SqliteStore

IDS = [f"job-{n:02d}" for n in range(30)]


def _config(url: str, state: Path, functions: int) -> Config:
    return Config.model_validate(
        {
            "fc": emulator_fc(url),
            "state": {"path": state},
            "poll": {"interval_s": 0.5, "max_interval_s": 0.5, "api_budget_per_s": 20},
            "watch": [
                {"service": "s", "function": f"f{n}", "invocations": ["unused"]}
                for n in range(functions)
            ],
        }
    )


def _tracked(functions: int) -> list[Tracked]:
    return [
        Tracked(InvocationRef(FunctionRef(Api.FC2, f"f{n % functions}", "s"), i), {})
        for n, i in enumerate(IDS)
    ]


@pytest.fixture
async def emulator(start_emulator: EmulatorFactory) -> RunningEmulator:
    running: list[dict[str, Any]] = [{"at_s": 0, "status": "Running"}]
    # Each id alone in a function of its own, and all of them (again) in f0.
    specs = [
        {"id": i, "service": "s", "function": function, "timeline": running}
        for n, i in enumerate(IDS)
        for function in {f"f{n}", "f0"}
    ]
    emulator: RunningEmulator = await start_emulator(invocations=specs)
    return emulator


@pytest.fixture
async def parts_for(
    emulator: RunningEmulator, http_session: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[dict[int, Parts]]:
    built: dict[int, Parts] = {}
    for functions in (30, 1):
        state = tmp_path / f"state-{functions}.db"
        built[functions] = await build(
            _config(emulator.url, state, functions),
            _tracked(functions),
            store=await SqliteStore.open(state),
            session=http_session,
            clock=SystemClock(),
            rng=random.Random(3),
            metrics=None,
        )
    yield built
    for parts in built.values():
        await parts.store.close()


async def _run(parts: Parts, emulator: RunningEmulator, seconds: float) -> dict[str, int]:
    """Run polls and scans for ``seconds``; the emulator's request counts at that moment
    (polls that waited for the budget finish after the stop, and are not counted)."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(parts.scheduler.run(stop)),
        asyncio.create_task(parts.discovery.run(stop)),
    ]
    await asyncio.sleep(seconds)
    counts = dict(emulator.stats)
    stop.set()
    await asyncio.gather(*tasks)
    return counts


async def test_a_short_budget_stretches_every_interval_evenly(
    emulator: RunningEmulator, parts_for: dict[int, Parts]
) -> None:
    """30 invocations, each alone in its function (a Get each), want 60 calls a second; the
    budget is 20: every interval stretches 3x, and none starves."""
    parts = parts_for[30]
    demand = api_demand(parts.scheduler, parts.discovery)
    assert demand.demand_per_s == pytest.approx(60)
    assert demand.stretch == pytest.approx(3.0)
    before = {i: emulator.stats.get(f"requests:{i}", 0) for i in IDS}
    counts = await _run(parts, emulator, 4.0)
    polls = {i: counts.get(f"requests:{i}", 0) - before[i] for i in IDS}
    assert min(polls.values()) >= 1, polls  # none starves
    assert max(polls.values()) - min(polls.values()) <= 2, polls  # and none is favoured
    assert sum(polls.values()) <= 20 * 4 + 20  # the budget held (one second's burst)
    # What the daemon records every few seconds, `fc-watcher status` shows.
    await parts.store.save_daemon_info(info_values(demand), now_ms=0)
    shown = await render_status(parts.config.state.sqlite_path(), as_json=False)
    assert "FC API: 60.0 calls/s asked of a budget of 20/s: every interval stretched 3.0x" in shown


async def test_listing_one_function_fits_the_same_tracked_set_in_the_budget(
    emulator: RunningEmulator, parts_for: dict[int, Parts]
) -> None:
    """The same 30 invocations in one function: a scan is 5 Lists, not 30 Gets, so the
    budget suffices and nothing stretches."""
    parts = parts_for[1]
    await _run(parts, emulator, 2.0)  # first sightings by Get, then the scan takes over
    warm = dict(emulator.stats)  # after the stop: the Gets it let finish are counted here
    settled = await _run(parts, emulator, 2.0)
    demand = api_demand(parts.scheduler, parts.discovery)
    assert demand.stretch == 1.0
    assert demand.demand_per_s <= 20
    gets = sum(settled.get(f"requests:{i}", 0) - warm.get(f"requests:{i}", 0) for i in IDS[1:])
    assert gets == 0  # nothing changed: Lists only
    assert 0 < settled["requests"] - warm["requests"] <= 5 * 5  # about 4 scans of 5 Lists
