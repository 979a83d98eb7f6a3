"""The outbox dispatcher with the real store and real receivers: retries, order, restarts,
dead letters, grouping, and a receiver that is down for a minute."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import TypeAdapter
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from tests.conftest import Receiver
from watcher.config.delivery import SinkSettings
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Transition
from watcher.core.route import Target
from watcher.delivery.dispatcher import DeliveryPolicy, Dispatcher
from watcher.delivery.sinks import Sink
from watcher.delivery.sinks.registry import build_sink
from watcher.store.sqlite import SqliteStore

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)


class WallClock:
    """Delivery time that moves only when the test says so."""

    def __init__(self) -> None:
        self.ms = 1_795_680_000_000

    def __call__(self) -> int:
        return self.ms


async def commit_steps(
    store: SqliteStore,
    invocation_id: str,
    statuses: Sequence[str],
    sinks: Sequence[str],
    now_ms: int,
) -> list[Transition]:
    """Commit one status change per status for one invocation; return the transitions."""
    ref = InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), invocation_id)
    snapshot = (await store.load_snapshots()).get(ref.key)
    out: list[Transition] = []
    for status in statuses:
        result = decide.diff(
            snapshot, Invocation.model_validate({"status": status}), ref=ref, observed_ms=now_ms
        )
        await store.commit(
            ref,
            result.snapshot,
            transitions=result.transitions,
            routes={t.id: [Target(s, "critical") for s in sinks] for t in result.transitions},
            now_ms=now_ms,
        )
        snapshot = result.snapshot
        out.extend(result.transitions)
    return out


def webhook(receiver: Receiver, session: aiohttp.ClientSession, name: str = "hook") -> Sink:
    settings = {"name": name, "type": "webhook", "url": receiver.url + "/" + name, "secret": WHSEC}
    sink: Sink = build_sink(ADAPTER.validate_python(settings), session, None)
    return sink


async def test_retry_keeps_webhook_id_and_honours_retry_after(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """A 429 with Retry-After is retried no sooner than asked, with the same webhook-id."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    (transition,) = await commit_steps(store, "job-1", ["Failed"], ["hook"], clock.ms)
    dispatcher = Dispatcher(
        store, {"hook": webhook(receiver, http_session)}, wall_ms=clock, rng=random.Random(0)
    )
    receiver.answer((429, "slow down", {"Retry-After": "120"}))
    handled, next_ms = await dispatcher.deliver_due("hook")
    assert handled == 1
    assert next_ms is not None
    assert next_ms >= 120_000
    clock.ms += 119_000
    assert (await dispatcher.deliver_due("hook"))[0] == 0
    clock.ms += 1_000
    assert (await dispatcher.deliver_due("hook"))[0] == 1
    ids = [headers["webhook-id"] for _, headers, _ in receiver.requests]
    assert ids == [transition.id, transition.id]
    for _, headers, body in receiver.requests:
        Webhook(WHSEC).verify(body, {k.lower(): v for k, v in headers.items()})
    assert await store.outbox_counts() == {"sent": 1}
    await store.close()


async def test_order_is_kept_per_invocation_while_others_flow(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """While a row waits for its retry, later rows of that invocation wait too; others go on."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    a = await commit_steps(store, "a", ["Enqueued", "Running", "Failed"], ["hook"], clock.ms)
    b = await commit_steps(store, "b", ["Enqueued", "Running"], ["hook"], clock.ms)
    dispatcher = Dispatcher(
        store, {"hook": webhook(receiver, http_session)}, wall_ms=clock, rng=random.Random(0)
    )
    receiver.answer((500, "boom"))
    await dispatcher.deliver_due("hook")
    first_pass = [h["webhook-id"] for _, h, _ in receiver.requests]
    assert first_pass == [a[0].id, b[0].id, b[1].id]  # a[0] failed; a[1], a[2] held back
    clock.ms += 3_600_000
    await dispatcher.deliver_due("hook")
    assert [h["webhook-id"] for _, h, _ in receiver.requests][3:] == [t.id for t in a]
    await store.close()


async def test_restart_in_the_middle_of_retrying(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """Retry state lives in the DB: a new process resumes with the attempt count and due time."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    await commit_steps(store, "job-1", ["Failed"], ["hook"], clock.ms)
    receiver.answer((503, "down"), (503, "down"))
    first = Dispatcher(
        store, {"hook": webhook(receiver, http_session)}, wall_ms=clock, rng=random.Random(0)
    )
    await first.deliver_due("hook")
    clock.ms += 3_600_000
    await first.deliver_due("hook")
    await store.close()  # the process dies here

    store = await SqliteStore.open(tmp_path / "state.db")
    (row,) = await store.pending("hook", 10)
    assert row.attempts == 2
    second = Dispatcher(
        store, {"hook": webhook(receiver, http_session)}, wall_ms=clock, rng=random.Random(0)
    )
    clock.ms += 3_600_000
    assert (await second.deliver_due("hook"))[0] == 1
    assert await store.outbox_counts() == {"sent": 1}
    assert len({h["webhook-id"] for _, h, _ in receiver.requests}) == 1
    await store.close()


async def test_receiver_down_for_a_minute_gets_everything_in_order(
    tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    """With the receiver's port closed for 60 s of delivery time, nothing is lost: once it is
    back, every transition arrives, in order per invocation."""
    clock = WallClock()
    receiver = Receiver()
    await receiver.start()
    port = receiver.port
    sink = webhook(receiver, http_session)
    await receiver.stop()  # down
    store = await SqliteStore.open(tmp_path / "state.db")
    expected = {
        name: await commit_steps(
            store,
            name,
            ["Enqueued", "Running", "Retrying", "Running", "Failed"],
            ["hook"],
            clock.ms,
        )
        for name in ("a", "b", "c")
    }
    dispatcher = Dispatcher(
        store,
        {"hook": sink},
        {"hook": DeliveryPolicy(backoff_base_s=1, backoff_cap_s=10)},
        wall_ms=clock,
    )
    attempts = 0
    for _ in range(60):
        handled, _ = await dispatcher.deliver_due("hook")
        attempts += handled
        clock.ms += 1000
    assert attempts > 3  # it kept trying, with backoff
    assert await store.outbox_counts() == {"pending": 15}
    back = Receiver()
    await back.start(port)  # up again on the same port
    try:
        for _ in range(30):
            await dispatcher.deliver_due("hook")
            clock.ms += 1000
        by_invocation: dict[str, list[str]] = {}
        for body in back.json_bodies():
            by_invocation.setdefault(body["data"]["invocationId"], []).append(body["data"]["id"])
        assert by_invocation == {name: [t.id for t in ts] for name, ts in expected.items()}
        assert await store.outbox_counts() == {"sent": 15}
    finally:
        await back.stop()
        await store.close()


async def test_permanent_failures_and_old_rows_are_dead_lettered_and_redeliverable(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """410 dead-letters at once; a row past max_age dead-letters; redeliver queues them again."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    (gone,) = await commit_steps(store, "a", ["Failed"], ["hook"], clock.ms)
    (old,) = await commit_steps(store, "b", ["Failed"], ["hook"], clock.ms)
    dispatcher = Dispatcher(
        store,
        {"hook": webhook(receiver, http_session)},
        {"hook": DeliveryPolicy(max_age_s=60)},
        wall_ms=clock,
    )
    receiver.answer((410, "gone"), (500, "boom"), (500, "boom again"))
    await dispatcher.deliver_due("hook")
    clock.ms += 61_000
    await dispatcher.deliver_due("hook")
    letters = await store.dead_letters()
    assert {letter.transition_id for letter in letters} == {gone.id, old.id}
    assert all(letter.last_error.startswith("HTTP") for letter in letters)
    assert await store.redeliver(sink="hook", transition_id=gone.id, now_ms=clock.ms) == 1
    assert await store.redeliver(sink=None, transition_id=None, now_ms=clock.ms) == 1
    await dispatcher.deliver_due("hook")
    assert await store.outbox_counts() == {"sent": 2}
    await store.close()


async def test_a_slow_sink_never_delays_another(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """One receiver hanging for seconds does not hold back delivery to another."""
    slow = Receiver()
    await slow.start()
    slow.delay_s = 3
    store = await SqliteStore.open(tmp_path / "state.db")
    await commit_steps(store, "a", ["Failed"], ["fast", "slow"], 0)
    dispatcher = Dispatcher(
        store,
        {
            "fast": webhook(receiver, http_session, "fast"),
            "slow": webhook(slow, http_session, "slow"),
        },
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        for _ in range(100):
            if receiver.requests:
                break
            await asyncio.sleep(0.02)
        assert receiver.requests, "the fast sink waited for the slow one"
        assert not (await store.outbox_counts()).get("sent", 0) > 1
    finally:
        stop.set()
        await task
        await slow.stop()
        await store.close()


async def test_chat_burst_is_grouped_into_one_message(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """Failures committed within group_wait_s reach the robot as one message."""
    clock = WallClock()
    store = await SqliteStore.open(tmp_path / "state.db")
    robot = build_sink(
        ADAPTER.validate_python(
            {
                "name": "ding",
                "type": "dingtalk",
                "url": receiver.url + "/r?access_token=t",
                "group_wait_s": 10,
            }
        ),
        http_session,
        None,
    )
    receiver.default = (200, '{"errcode":0}', {})
    dispatcher = Dispatcher(store, {"ding": robot}, wall_ms=clock)
    for n in range(12):
        await commit_steps(store, f"job-{n}", ["Failed"], ["ding"], clock.ms)
        clock.ms += 500
        handled, _ = await dispatcher.deliver_due("ding")
        assert handled == 0  # still inside the grouping wait
    clock.ms += 10_000
    assert (await dispatcher.deliver_due("ding"))[0] == 12
    assert len(receiver.requests) == 1
    assert receiver.json_bodies()[0]["markdown"]["title"] == "12 invocations of transcode: failed"
    await store.close()


async def test_robot_rate_window_holds_batches(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """With max_per_minute 2, a third message waits for the window instead of failing."""
    store = await SqliteStore.open(tmp_path / "state.db")
    robot = build_sink(
        ADAPTER.validate_python(
            {
                "name": "wx",
                "type": "wecom",
                "url": receiver.url + "/k",
                "group_wait_s": 0,
                "max_per_minute": 2,
                "max_group": 1,
            }
        ),
        http_session,
        None,
    )
    receiver.default = (200, '{"errcode":0}', {})
    await commit_steps(store, "a", ["Failed"], ["wx"], 0)
    await commit_steps(store, "b", ["Failed"], ["wx"], 0)
    await commit_steps(store, "c", ["Failed"], ["wx"], 0)
    dispatcher = Dispatcher(store, {"wx": robot})
    handled, wait_ms = await dispatcher.deliver_due("wx")
    assert handled == 2
    assert wait_ms is not None
    assert 55_000 < wait_ms <= 60_000
    assert await store.outbox_counts() == {"sent": 2, "pending": 1}
    await store.close()


async def test_redeliver_command(tmp_path: Path, capsys: Any) -> None:
    """`fc-watcher redeliver` queues dead letters again, beside a running daemon's lock;
    an unknown sink name is one clear line."""
    import json as json_module

    from watcher.cli import EXIT_USAGE, main

    store = await SqliteStore.open(tmp_path / "state.db")
    (transition,) = await commit_steps(store, "a", ["Failed"], ["hook"], 0)
    (row,) = await store.pending("hook", 10)
    await store.mark_dead([row.seq], 1, "HTTP 410: gone")
    config = tmp_path / "watcher.yaml"
    config.write_text(
        json_module.dumps(
            {
                "fc": {"account_id": "1", "region": "cn-hangzhou"},
                "state": {"path": str(tmp_path / "state.db")},
                "watch": [{"service": "media", "function": "transcode", "invocations": ["a"]}],
                "sinks": [
                    {"name": "log", "type": "log"},
                    {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/"},
                ],
            }
        )
    )
    # The CLI runs its own event loop, as it does beside a running daemon: give it a thread.
    assert await asyncio.to_thread(main, ["status", "-c", str(config)]) == 0
    assert "HTTP 410: gone" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["redeliver", "-c", str(config), "--sink", "pager"]) == (
        EXIT_USAGE
    )
    assert "no sink is named 'pager'" in capsys.readouterr().err
    redeliver = ["redeliver", "-c", str(config), "--id", transition.id]
    assert await asyncio.to_thread(main, redeliver) == 0  # the lock is held
    assert "1 dead letter(s) queued again" in capsys.readouterr().out
    assert [r.transition_id for r in await store.pending("hook", 10)] == [transition.id]
    await store.close()


async def test_a_dead_receiver_is_one_warning_a_sink_an_interval(
    tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    """200 rows against a closed port, for a minute of delivery time: a handful of warning
    lines for the sink (the first at once, then one per 10 s, the rest at the stop) whose
    counts add up to every failed attempt; each row's retry only at debug."""
    clock = WallClock()
    receiver = Receiver()
    await receiver.start()
    settings = {"name": "hook", "type": "webhook", "url": receiver.url + "/", "concurrency": 200}
    sink = build_sink(ADAPTER.validate_python(settings), http_session, None)
    await receiver.stop()  # nothing listens there any more
    store = await SqliteStore.open(tmp_path / "state.db")
    for n in range(200):
        await commit_steps(store, f"job-{n}", ["Failed"], ["hook"], clock.ms)
    policy = DeliveryPolicy(backoff_base_s=1, backoff_cap_s=5)
    dispatcher = Dispatcher(store, {"hook": sink}, {"hook": policy}, wall_ms=clock)
    stop = asyncio.Event()
    with capture_logs() as entries:
        for _ in range(60):
            await dispatcher.deliver_due("hook")
            clock.ms += 1000
        stop.set()
        await dispatcher.run(stop)  # stopping tells what is still held back
    lines = [e for e in entries if e["event"] == "delivery_retrying"]
    attempts = sum(row.attempts for row in await store.pending("hook", 1000))
    assert {e["log_level"] for e in lines} == {"warning"}
    assert 2 <= len(lines) <= 1 + 60 // 10 + 1
    assert (lines[0]["rows"], lines[0]["attempts"], lines[0]["first"]) == (1, 1, True)
    assert sum(e["attempts"] for e in lines) == attempts
    assert sum(e["rows"] for e in lines) >= 200
    assert attempts >= 200
    per_row = [e for e in entries if e["event"] == "delivery_retry_row"]
    assert {e["log_level"] for e in per_row} == {"debug"}
    assert len(per_row) == attempts
    await store.close()
