"""Wall-clock steps of an hour, forward and back, against the real dispatcher and the poller.

What faketime found, replayed on an injected clock whose monotonic time moves as the test says
while its wall clock can be stepped on top: rows 15 s old dead-lettered as "too old" after +1 h,
a false ``invocation.stuck`` ("Running for 3606 s"), and a Failed alert held for an hour
after -1 h with the receiver healthy. The store, receiver and emulator are real.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import TypeAdapter

from tests.conftest import EmulatorFactory, Receiver, emulator_config
from tests.integration.test_delivery import commit_steps, webhook
from watcher.config.delivery import SinkSettings
from watcher.config.models import Tracked
from watcher.core.clock import steady
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import TransitionType
from watcher.daemon.build import build
from watcher.delivery.dispatcher import DeliveryPolicy, Dispatcher
from watcher.delivery.sinks.registry import build_sink
from watcher.store.sqlite import SqliteStore

HOUR_MS = 3_600_000
STEPS = pytest.mark.parametrize("step_ms", [HOUR_MS, -HOUR_MS], ids=["forward", "back"])
ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)


class SteppingClock:
    """Monotonic time that moves only when told; a wall clock that follows it, and can be
    stepped on top."""

    def __init__(self, base_ms: int = 1_795_680_000_000) -> None:
        self.now_s = 0.0
        self.base_ms = base_ms
        self.step_ms = 0

    def monotonic(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return self.base_ms + int(self.now_s * 1000) + self.step_ms


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state.db")
    yield opened
    await opened.close()


@STEPS
async def test_a_retry_after_a_step_is_neither_dead_nor_held(
    step_ms: int, store: SqliteStore, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """A Failed alert meets a 503, the wall clock steps, 15 s later the retry meets another:
    it is retried again, not "too old" for max_age_s 60 nor held for an hour, and delivered
    within the 10 s backoff cap, with its webhook-id every time."""
    clock = SteppingClock()
    (transition,) = await commit_steps(store, "job-1", ["Failed"], ["hook"], steady(clock)())
    policy = DeliveryPolicy(backoff_base_s=10, backoff_cap_s=10, max_age_s=60)
    dispatcher = Dispatcher(
        store,
        {"hook": webhook(receiver, http_session)},
        {"hook": policy},
        clock=clock,
        rng=random.Random(0),
    )
    receiver.answer((503, "down"), (503, "still down"))
    assert (await dispatcher.deliver_due("hook"))[0] == 1
    clock.step_ms += step_ms
    clock.now_s += 15
    assert (await dispatcher.deliver_due("hook"))[0] == 1
    assert await store.dead_letters() == []
    clock.now_s += 10
    assert (await dispatcher.deliver_due("hook"))[0] == 1
    assert await store.outbox_counts() == {"sent": 1}
    assert [h["webhook-id"] for _, h, _ in receiver.requests] == [transition.id] * 3


@STEPS
async def test_an_open_circuit_probes_on_time_after_a_step(
    step_ms: int, store: SqliteStore, http_session: aiohttp.ClientSession
) -> None:
    """The receiver is down, the circuit opens (next probe within 10 s),
    the wall clock steps and the receiver comes back: no probe a second later (a forward step
    made it due), and the probe at 10 s delivers (a backward step put it an hour away)."""
    clock = SteppingClock()
    await commit_steps(store, "job-1", ["Failed"], ["hook"], steady(clock)())
    receiver = Receiver()
    await receiver.start()
    port = receiver.port
    sink = webhook(receiver, http_session)
    await receiver.stop()
    policy = DeliveryPolicy(backoff_base_s=10, backoff_cap_s=10)
    dispatcher = Dispatcher(
        store, {"hook": sink}, {"hook": policy}, clock=clock, rng=random.Random(0)
    )
    await dispatcher.deliver_due("hook")
    assert await store.outbox_counts() == {"pending": 1}
    clock.step_ms += step_ms
    await receiver.start(port)
    try:
        clock.now_s += 1
        handled, wait_ms = await dispatcher.deliver_due("hook")
        assert handled == 0
        assert wait_ms is not None
        assert 0 < wait_ms < 9_000
        clock.now_s += 9
        assert (await dispatcher.deliver_due("hook"))[0] == 1
        assert await store.outbox_counts() == {"sent": 1}
    finally:
        await receiver.stop()


@STEPS
async def test_a_grouping_wait_across_a_step_is_the_sinks(
    step_ms: int, store: SqliteStore, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """A robot's 10 s grouping wait, with the wall clock stepped an hour after the first row:
    the burst is neither sent at once in pieces nor held an hour, but goes out 10 s after its
    first row, as one message."""
    clock = SteppingClock()
    robot = build_sink(
        ADAPTER.validate_python(
            {"name": "ding", "type": "dingtalk", "url": receiver.url + "/r", "group_wait_s": 10}
        ),
        http_session,
        None,
    )
    receiver.default = (200, '{"errcode":0}', {})
    dispatcher = Dispatcher(store, {"ding": robot}, clock=clock)
    for n in range(3):
        await commit_steps(store, f"job-{n}", ["Failed"], ["ding"], steady(clock)())
        assert (await dispatcher.deliver_due("ding"))[0] == 0
        clock.step_ms += step_ms if n == 0 else 0
        clock.now_s += 1
    clock.now_s += 7
    assert (await dispatcher.deliver_due("ding"))[0] == 3
    assert len(receiver.requests) == 1


@STEPS
async def test_the_poller_reports_stuck_by_steady_time(
    step_ms: int,
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Running, stuck after 60 s; the wall clock steps an hour after 6 s: no stuck report
    before 60 s of steady time (a forward step made it "Running for 3606 s"), and one soon
    after 60 s (a backward step put it off by an hour)."""
    emu = await start_emulator(
        invocations=[{"id": "job-1", "timeline": [{"at_s": 0, "status": "Running"}]}]
    )
    store = await SqliteStore.open(tmp_path / "state.db")
    clock = SteppingClock(emu.emulator.app.epoch_ms)  # FC's timestamps and ours agree
    ref = InvocationRef(FunctionRef(Api.FC2, "demo-function", "demo-service", "LATEST"), "job-1")
    config = emulator_config(
        emu.url, store.path, poll={"interval_s": 5, "max_interval_s": 5, "jitter": 0}
    )
    parts = await build(
        config,
        [Tracked(ref=ref, labels={}, stuck_after_s=60)],
        store=store,
        session=http_session,
        clock=clock,
        rng=random.Random(1),
        metrics=None,
    )
    try:
        stuck_at: list[float] = []
        while clock.now_s < 90:
            wait_s = parts.scheduler.next_due_in_s()
            assert wait_s is not None
            clock.now_s += wait_s
            emu.clock.advance(wait_s)
            if clock.now_s >= 6 and not clock.step_ms:
                clock.step_ms = step_ms
            await parts.scheduler.poll_due()
            found = [t for t in await store.transitions() if t.type is TransitionType.STUCK]
            if found and not stuck_at:
                stuck_at.append(clock.now_s)
                assert found[0].detail.startswith("Running for 6")
        assert len(stuck_at) == 1
        assert 60 <= stuck_at[0] <= 66
    finally:
        await store.close()
