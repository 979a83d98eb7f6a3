"""Per-sink limits against real loopback receivers: ``concurrency`` requests in flight at most,
``rate_limit_per_s`` held by a token bucket on a clock the test moves, and held rows neither
failed nor dead nor counted as attempts.

Time never decides a verdict here: the rate tests run on a ``ManualTimer`` that moves only when
the test says so, and every check counts requests and their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import TypeAdapter

from tests.conftest import Receiver
from watcher.config.delivery import SinkSettings
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Transition
from watcher.core.route import Target
from watcher.delivery.dispatcher import Dispatcher
from watcher.delivery.sinks import Outgoing, Sink
from watcher.delivery.sinks.base import Timer
from watcher.delivery.sinks.registry import build_sink
from watcher.store.sqlite import SqliteStore

ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)
NOW_MS = 1_795_680_000_000


class ManualTimer:
    """Monotonic time that moves only in ``advance``; a sleeper wakes once time reaches its
    deadline, so a test sees exactly what waits and what goes."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, delay_s: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.t + delay_s, future))
        await future

    @property
    def parked(self) -> int:
        return sum(1 for _, future in self._sleepers if not future.done())

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for deadline, future in self._sleepers:
            if deadline <= self.t and not future.done():
                future.set_result(None)
        self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]

    def timer(self) -> Timer:
        return Timer(now=self.now, sleep=self.sleep)


class CountingReceiver(Receiver):
    """A receiver that also counts requests in flight (its peak) and stamps each arrival with
    ``stamp()``; with ``gate`` clear it holds every answer until the test sets it."""

    def __init__(self, stamp: Callable[[], float] = lambda: 0.0) -> None:
        super().__init__()
        self.in_flight = 0
        self.peak = 0
        self.stamps: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self._stamp = stamp

    async def _handle(self, request: Any) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.stamps.append(self._stamp())
        try:
            await self.gate.wait()
            return await super()._handle(request)
        finally:
            self.in_flight -= 1


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (pytest's timeout bounds a test that never gets there). Polled:
    the conditions span the receiver, the sink and the timer, which share no event."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.005)


async def settle() -> None:
    """Let every ready task run, and loopback requests land, before checking nothing more did."""
    for _ in range(20):
        await asyncio.sleep(0.005)


def ref_of(invocation_id: str) -> InvocationRef:
    return InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), invocation_id)


def first_seen_failed(invocation_id: str) -> decide.DiffResult:
    failed_now = Invocation.model_validate({"status": "Failed"})
    return decide.diff(None, failed_now, ref=ref_of(invocation_id), observed_ms=NOW_MS)


def failed(invocation_id: str) -> Transition:
    return first_seen_failed(invocation_id).transitions[-1]


async def commit_failures(store: SqliteStore, ids: Sequence[str], sink: str) -> None:
    """One Failed transition per invocation, routed to ``sink``, in the order of ``ids``."""
    for invocation_id in ids:
        result = first_seen_failed(invocation_id)
        await store.commit(
            ref_of(invocation_id),
            result.snapshot,
            transitions=result.transitions,
            routes={t.id: [Target(sink, "critical")] for t in result.transitions},
            now_ms=NOW_MS,
        )


def webhook(url: str, session: aiohttp.ClientSession, timer: Timer, **limits: Any) -> Sink:
    entry = ADAPTER.validate_python({"name": "hook", "type": "webhook", "url": url, **limits})
    sink: Sink = build_sink(entry, session, None, timer=timer)
    return sink


@pytest.fixture
async def counting() -> AsyncIterator[CountingReceiver]:
    started = CountingReceiver()
    await started.start()
    yield started
    await started.stop()


async def test_sink_holds_its_concurrency_whoever_calls_send(
    counting: CountingReceiver, http_session: aiohttp.ClientSession
) -> None:
    """Twelve sends at once through a sink with concurrency 3: the receiver sees three, and
    only after one is answered does another arrive."""
    sink = webhook(counting.url, http_session, Timer(), concurrency=3)
    counting.gate.clear()
    sends = asyncio.gather(*(sink.send([Outgoing(failed(f"job-{i}"))]) for i in range(12)))
    await until(lambda: counting.in_flight == 3)
    await settle()
    assert len(counting.stamps) == 3
    assert sink.room() == 0
    counting.gate.set()
    await sends
    assert len(counting.requests) == 12
    assert counting.peak == 3


async def test_dispatcher_keeps_a_sink_within_its_concurrency(
    tmp_path: Path, counting: CountingReceiver, http_session: aiohttp.ClientSession
) -> None:
    """Many rows due, a receiver that delays answers: never more than 3 at once, all sent."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await commit_failures(store, [f"job-{i}" for i in range(20)], "hook")
    sink = webhook(counting.url, http_session, Timer(), max_in_flight=3)  # the old name
    counting.delay_s = 0.02
    counting.gate.clear()
    dispatcher = Dispatcher(store, {"hook": sink}, wall_ms=lambda: NOW_MS)
    delivering = asyncio.ensure_future(dispatcher.deliver_due("hook"))
    await until(lambda: counting.in_flight == 3)
    await settle()
    assert len(counting.stamps) == 3
    counting.gate.set()
    assert await delivering == (20, None)
    assert counting.peak == 3
    assert len(counting.requests) == 20
    assert await store.outbox_counts() == {"sent": 20}
    await store.close()


async def test_rate_holds_rows_in_the_outbox_between_passes(
    tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    """Rate 2/s, one at a time: a pass sends what the bucket holds and says when to come back;
    the rest stay pending, untried, and go out as time passes. None fails, none dies."""
    manual = ManualTimer()
    receiver = CountingReceiver(manual.now)
    await receiver.start()
    store = await SqliteStore.open(tmp_path / "state.db")
    await commit_failures(store, [f"job-{i}" for i in range(6)], "hook")
    sink = webhook(receiver.url, http_session, manual.timer(), concurrency=1, rate_limit_per_s=2)
    dispatcher = Dispatcher(store, {"hook": sink}, wall_ms=lambda: NOW_MS)

    assert await dispatcher.deliver_due("hook") == (2, 500)  # the burst: one second's worth
    held = await store.pending("hook", 10)
    assert len(held) == 4
    assert all(row.attempts == 0 for row in held)  # held is not an attempt
    assert await dispatcher.deliver_due("hook") == (0, 500)  # asking again sends nothing
    manual.advance(0.5)
    assert await dispatcher.deliver_due("hook") == (1, 500)
    manual.advance(1.0)
    assert await dispatcher.deliver_due("hook") == (2, 500)
    manual.advance(0.5)
    assert await dispatcher.deliver_due("hook") == (1, None)

    assert receiver.stamps == [0.0, 0.0, 0.5, 1.5, 1.5, 2.0]
    assert await store.outbox_counts() == {"sent": 6}
    assert await store.dead_letters() == []
    await store.close()
    await receiver.stop()


def most_in_window(stamps: Sequence[float], window_s: float) -> int:
    """The most stamps in any half-open window of ``window_s`` seconds."""
    return max(sum(1 for t in stamps if start <= t < start + window_s) for start in stamps)


def settled_at(
    sent: int, receiver: CountingReceiver, manual: ManualTimer, delivering: asyncio.Future[Any]
) -> Callable[[], bool]:
    """``sent`` requests arrived, and the next send is held: asleep in the sink, or left
    pending by a pass that returned."""
    return lambda: len(receiver.stamps) == sent and (manual.parked == 1 or delivering.done())


async def test_rate_holds_sends_planned_side_by_side(
    tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    """Rate 2/s with concurrency 8: one pass plans eight sends; the sink lets the burst of two
    go and holds each of the others until its token, in order. None fails, none dies.

    Written for either dispatcher: one whose pass waits in the sink for the held sends, or one
    that sends only what ``sink.room()`` allows and comes back after the wait it returns.
    """
    manual = ManualTimer()
    receiver = CountingReceiver(manual.now)
    await receiver.start()
    store = await SqliteStore.open(tmp_path / "state.db")
    ids = [f"job-{i}" for i in range(8)]
    await commit_failures(store, ids, "hook")
    sink = webhook(receiver.url, http_session, manual.timer(), concurrency=8, rate_limit_per_s=2)
    dispatcher = Dispatcher(store, {"hook": sink}, wall_ms=lambda: NOW_MS)
    delivering = asyncio.ensure_future(dispatcher.deliver_due("hook"))
    handled = 0
    for sent in range(2, 9):
        # Exactly `sent` requests have gone; the rest are held, in the sink or in the outbox.
        await until(settled_at(sent, receiver, manual, delivering))
        await settle()
        assert len(receiver.stamps) == sent
        manual.advance(0.5)
        if delivering.done():
            count, wait_ms = delivering.result()
            handled += count
            if wait_ms is None:
                break
            assert wait_ms == 500
            delivering = asyncio.ensure_future(dispatcher.deliver_due("hook"))
    assert handled == 8

    assert receiver.stamps == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    for window_s in (0.5, 1.0, 2.0):
        assert most_in_window(receiver.stamps, window_s) <= 2 + 2 * window_s
    order = [body["data"]["invocationId"] for body in receiver.json_bodies()]
    # The burst's two race each other over loopback; the held ones go in planned order.
    assert sorted(order[:2]) == ids[:2]
    assert order[2:] == ids[2:]
    assert await store.outbox_counts() == {"sent": 8}
    assert await store.dead_letters() == []
    await store.close()
    await receiver.stop()


async def test_slack_defaults_to_one_message_a_second(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """Slack's default rate: a second message waits a second for its token, then goes."""
    manual = ManualTimer()
    entry = ADAPTER.validate_python(
        {"name": "slack", "type": "slack", "url": receiver.url + "/services/T/B/X"}
    )
    sink = build_sink(entry, http_session, None, timer=manual.timer())
    await sink.send([Outgoing(failed("a"))])
    assert sink.wait_s() == pytest.approx(1.0)
    second = asyncio.ensure_future(sink.send([Outgoing(failed("b"))]))
    await until(lambda: manual.parked == 1)
    assert len(receiver.requests) == 1
    manual.advance(1.0)
    await second
    assert len(receiver.requests) == 2
