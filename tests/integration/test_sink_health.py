"""Sink health with the real store and real loopback receivers, time driven by the test's wall
clock: the circuit opens, probes one row at a time and closes; an outage's backlog goes out at
once on recovery, in order; a Retry-After pauses the whole sink and no more; a receiver that
fails every message twice keeps every wait short; a restart resumes probing."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.conftest import Receiver
from tests.integration.test_delivery import ADAPTER, WallClock, commit_steps, webhook
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Transition
from watcher.daemon.status import render_status
from watcher.delivery.dispatcher import DeliveryPolicy, Dispatcher, select_heads
from watcher.delivery.sinks import Outgoing, SinkError
from watcher.delivery.sinks.base import FailureKind
from watcher.delivery.sinks.registry import build_sink
from watcher.store.records import OutboxRow
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

STEPS = ["Enqueued", "Running", "Failed"]


def ids_of(receiver: Receiver, start: int = 0) -> list[str]:
    return [headers["webhook-id"] for _, headers, _ in receiver.requests[start:]]


def by_invocation(receiver: Receiver, start: int = 0) -> dict[str, list[str]]:
    """Transition ids each invocation's requests carried, in arrival order."""
    order: dict[str, list[str]] = {}
    for _, _, body in receiver.requests[start:]:
        data = json.loads(body)["data"]
        order.setdefault(data["invocationId"], []).append(data["id"])
    return order


def gauge(metrics: Metrics, name: str) -> float:
    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"sink": "hook"}:
                return float(sample.value)
    raise AssertionError(f"no {name} for hook")


def no_outage_waits(rows: list[OutboxRow], due_by_ms: int) -> bool:
    """The outage left no wait in the rows: each is due, and none was charged with the
    outage's failures. The first failure, before a second invocation's showed the sink was
    down, may have been charged to its row: one own failure, at most a second's wait."""
    return sum(row.row_failures for row in rows) <= 1 and all(
        row.next_attempt_ms <= due_by_ms for row in rows
    )


async def commit_all(
    store: SqliteStore, names: str, clock: WallClock, steps: list[str] = STEPS
) -> dict[str, list[Transition]]:
    return {name: await commit_steps(store, name, steps, ["hook"], clock.ms) for name in names}


async def test_circuit_opens_probes_one_row_at_a_time_and_closes(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """Heads of four invocations fail side by side: the sink is down, not the rows. Then one
    probe a pass, always the oldest head, until the first success sends everything."""
    clock = WallClock()
    path = tmp_path / "state.db"
    store = await SqliteStore.open(path)
    expected = await commit_all(store, "abcd", clock)
    metrics = Metrics()
    sink = webhook(receiver, http_session)
    dispatcher = Dispatcher(
        store, {"hook": sink}, wall_ms=clock, rng=random.Random(1), metrics=metrics
    )
    receiver.default = (503, "down", {})
    with capture_logs() as logs:
        handled, wait_ms = await dispatcher.deliver_due("hook")
        assert handled == 4
        opened_ms = clock.ms
        (health,) = await store.sink_health()
        assert (health.healthy, health.since_ms) == (False, opened_ms)
        assert gauge(metrics, "fc_watcher_sink_up") == 0
        assert "unhealthy" in await render_status(path, as_json=False)
        for probe in range(4):
            assert wait_ms is not None
            assert wait_ms <= 1000 * 2**probe
            clock.ms += wait_ms
            before = len(receiver.requests)
            (oldest,) = select_heads(await store.pending("hook", 100), clock.ms, 1)
            handled, wait_ms = await dispatcher.deliver_due("hook")
            assert handled == 1
            assert ids_of(receiver, before) == [oldest.transition_id]  # one, the oldest due head
        assert no_outage_waits(await store.pending("hook", 100), clock.ms + 1000)
        receiver.default = (200, "ok", {})
        assert wait_ms is not None
        clock.ms += wait_ms
        recovered = len(receiver.requests)
        assert (await dispatcher.deliver_due("hook")) == (12, None)
    assert by_invocation(receiver, recovered) == {k: [t.id for t in v] for k, v in expected.items()}
    assert await store.outbox_counts() == {"sent": 12}
    assert gauge(metrics, "fc_watcher_sink_up") == 1
    assert gauge(metrics, "fc_watcher_sink_seconds_since_success") == 0
    events = {log["event"]: log for log in logs if log["event"].startswith("sink_")}
    assert events["sink_unhealthy"]["backlog"] == 12
    assert events["sink_recovered"]["backlog"] == 11  # the probe itself was delivered
    assert events["sink_recovered"]["outage_s"] == (clock.ms - opened_ms) / 1000
    assert events["sink_recovered"]["failed_probes"] == 4
    (health,) = await store.sink_health()
    assert (health.healthy, health.since_ms, health.last_success_ms) == (True, clock.ms, clock.ms)
    report = json.loads(await render_status(path, as_json=True))
    assert report["sinks"] == [
        {
            "sink": "hook",
            "state": "healthy",
            "sinceMs": clock.ms,
            "lastSuccessMs": clock.ms,
            "lastError": "HTTP 503: down",  # the outage's, kept for the record
            "pending": 0,
            "dead": 0,
            "oldestPendingMs": None,
        }
    ]
    await store.close()


async def test_backlog_of_a_minute_outage_goes_out_at_once_in_order(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """60 s of 503s by the test's clock: one probe at a time, nothing dead-lettered (the
    outage is shorter than max_age_s), no row's own backoff grown; the first success after
    recovery sends the whole backlog in that pass, every webhook-id its transition's."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    expected = await commit_all(store, "abc", clock, ["Enqueued", "Running", "Retrying", "Failed"])
    all_ids = {t.id for ts in expected.values() for t in ts}
    policy = DeliveryPolicy(max_age_s=120)
    dispatcher = Dispatcher(
        store, {"hook": webhook(receiver, http_session)}, {"hook": policy}, wall_ms=clock
    )
    receiver.default = (503, "down", {})
    start_ms = clock.ms
    while clock.ms - start_ms < 60_000:
        before = len(receiver.requests)
        await dispatcher.deliver_due("hook")
        assert clock.ms == start_ms or len(receiver.requests) - before <= 1
        clock.ms += 1000
    rows = await store.pending("hook", 100)
    assert len(rows) == 12
    assert no_outage_waits(rows, clock.ms)
    receiver.default = (200, "ok", {})
    recovered = len(receiver.requests)
    passes = 0
    while await store.pending("hook", 100):
        passes += 1
        assert passes <= 31  # the next probe comes within the probe cap (30 s)
        if (await dispatcher.deliver_due("hook"))[0]:
            assert await store.pending("hook", 100) == []  # all in the pass that recovered
        clock.ms += 1000
    assert set(ids_of(receiver)) == all_ids
    assert by_invocation(receiver, recovered) == {k: [t.id for t in v] for k, v in expected.items()}
    assert await store.outbox_counts() == {"sent": 12}
    await store.close()


async def test_retry_after_pauses_the_whole_sink_and_no_more(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """A 429 with Retry-After: 30 holds every row of the sink 30 s; then all go in one pass."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    expected = await commit_all(store, "abc", clock, ["Running", "Failed"])
    dispatcher = Dispatcher(store, {"hook": webhook(receiver, http_session)}, wall_ms=clock)
    receiver.answer((429, "slow down", {"Retry-After": "30"}))
    assert await dispatcher.deliver_due("hook") == (3, 30_000)  # the three heads, side by side
    clock.ms += 29_000
    assert await dispatcher.deliver_due("hook") == (0, 1000)
    assert len(receiver.requests) == 3  # the other invocations' rows waited too
    throttled = [row for row in await store.pending("hook", 10) if row.attempts]
    assert [(row.attempts, row.row_failures) for row in throttled] == [(1, 0)]
    clock.ms += 1000
    assert await dispatcher.deliver_due("hook") == (4, None)  # then at normal pace
    # The first request to arrive got the 429; every other one was accepted, in order.
    assert by_invocation(receiver, 1) == {k: [t.id for t in v] for k, v in expected.items()}
    await store.close()


class FailsEachMessage(Receiver):
    """Answers each webhook-id's first POSTs with ``failures`` (statuses, in turn), then 200."""

    def __init__(self, failures: tuple[int, ...]) -> None:
        super().__init__()
        self.failures = failures

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        self.requests.append((str(request.rel_url), dict(request.headers), body))
        webhook_id = request.headers["webhook-id"]
        tries = sum(1 for _, headers, _ in self.requests if headers["webhook-id"] == webhook_id)
        status = self.failures[tries - 1] if tries <= len(self.failures) else 200
        return web.Response(status=status, text="ok" if status == 200 else "no")


@pytest.mark.parametrize(
    ("failures", "longest_wait_ms"),
    [
        ((500, 500), 4000),
        # The receiver: 500 twice, then 429 (no Retry-After) once, to every message.
        ((500, 500, 429), 8000),
    ],
)
async def test_receiver_failing_every_message_keeps_every_wait_short(
    tmp_path: Path,
    http_session: aiohttp.ClientSession,
    failures: tuple[int, ...],
    longest_wait_ms: int,
    report: Callable[[str], None],
) -> None:
    """Everything is delivered once, in order per invocation, and no wait (a row's next
    attempt, or the sink's next pass) ever grows past a few seconds."""
    receiver = FailsEachMessage(failures)
    await receiver.start()
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    expected = await commit_all(store, "abcdefgh", clock, ["Enqueued", "Running", "Failed"])
    dispatcher = Dispatcher(
        store, {"hook": webhook(receiver, http_session)}, wall_ms=clock, rng=random.Random(2)
    )
    waits: list[int] = []
    start_ms = clock.ms
    try:
        for _ in range(1000):
            _, next_ms = await dispatcher.deliver_due("hook")
            pending = await store.pending("hook", 100)
            if not pending:
                break
            assert all(row.row_failures <= len(failures) for row in pending)
            assert next_ms is not None
            waits += [next_ms, *(row.next_attempt_ms - clock.ms for row in pending)]
            clock.ms += max(next_ms, 1)
        assert await store.outbox_counts() == {"sent": 24}
        accepted: dict[str, list[str]] = {}
        seen: dict[str, int] = {}
        for _, headers, body in receiver.requests:
            webhook_id = headers["webhook-id"]
            seen[webhook_id] = seen.get(webhook_id, 0) + 1
            if seen[webhook_id] == len(failures) + 1:
                accepted.setdefault(json.loads(body)["data"]["invocationId"], []).append(webhook_id)
        assert accepted == {k: [t.id for t in v] for k, v in expected.items()}
        assert set(seen.values()) == {len(failures) + 1}
        assert max(waits) <= longest_wait_ms
        report(
            f"{failures} to each of 24 messages: all delivered after "
            f"{(clock.ms - start_ms) / 1000:g} s of delivery time, longest wait {max(waits)} ms"
        )
    finally:
        await receiver.stop()
        await store.close()


async def test_a_restart_during_an_outage_resumes_with_one_probe(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """The circuit's state is in the DB: a new process probes with one row, not every head."""
    clock = WallClock()
    path = tmp_path / "state.db"
    store = await SqliteStore.open(path)
    await commit_all(store, "abc", clock)
    receiver.default = (503, "down", {})
    first = Dispatcher(store, {"hook": webhook(receiver, http_session)}, wall_ms=clock)
    assert (await first.deliver_due("hook"))[0] == 3
    await store.close()  # the process dies here

    store = await SqliteStore.open(path)
    clock.ms += 5000
    second = Dispatcher(store, {"hook": webhook(receiver, http_session)}, wall_ms=clock)
    assert (await second.deliver_due("hook"))[0] == 1
    assert len(receiver.requests) == 4
    text = await render_status(path, as_json=False, now_ms=clock.ms)
    assert "SINK HEALTH" in text
    assert "hook  unhealthy  5s" in text
    receiver.default = (200, "ok", {})
    clock.ms += 60_000
    assert (await second.deliver_due("hook"))[0] == 9
    (health,) = await store.sink_health()
    assert health.healthy
    await store.close()


async def test_no_answer_is_a_transport_failure(http_session: aiohttp.ClientSession) -> None:
    """A closed port (refused) and a receiver slower than the timeout are both TRANSPORT:
    the receiver's fault at once, whichever row was being sent."""
    ref = InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), "job-1")
    invocation = Invocation.model_validate({"status": "Failed"})
    (transition,) = decide.diff(None, invocation, ref=ref, observed_ms=1).transitions
    slow = Receiver()
    await slow.start()
    slow.delay_s = 1.0
    closed = Receiver()
    await closed.start()
    await closed.stop()
    try:
        for url in (closed.url, slow.url):
            settings = {"name": "hook", "type": "webhook", "url": url, "timeout_s": 0.2}
            sink = build_sink(ADAPTER.validate_python(settings), http_session, None)
            with pytest.raises(SinkError) as caught:
                await sink.send([Outgoing(transition)])
            assert caught.value.kind is FailureKind.TRANSPORT
            assert caught.value.retryable
    finally:
        await slow.stop()
