"""Replicas sharing one real PostgreSQL (``tests.pg``): slot leases, fencing, outbox claims.

Replicas here are in-process: a ``PostgresStore`` each (its own pool, as a host would have),
an ``Ownership`` and a ``Replica`` whose heartbeats the test drives one by one, and, where
polls matter, parts built with ``build()`` against the real emulator. Lease times are the
database's: the tests read its clock and never assert how long anything took, only what held
before and after a lease ran out.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
import yaml

from tests.conftest import EmulatorFactory, Receiver, emulator_fc
from watcher.config.load import load_config
from watcher.config.models import Config, Tracked
from watcher.core import decide
from watcher.core.clock import SystemClock
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.route import Target
from watcher.core.slots import SLOTS
from watcher.daemon.build import Parts, build
from watcher.daemon.replica import Replica
from watcher.daemon.replicas_view import postgres_status, slot_ranges
from watcher.daemon.reporting import readiness
from watcher.daemon.service import Watcher
from watcher.engine.ownership import Fencing, Ownership, function_slot
from watcher.engine.poll import PollOutcome
from watcher.store.errors import FencedError
from watcher.store.postgres import PostgresStore, open_postgres
from watcher.store.postgres.leases import NOW

if TYPE_CHECKING:
    from tests.pg import PgServer

pytest_plugins = ["tests.pg"]

LEASE_S = 1.0
FUNCTIONS = [FunctionRef(Api.FC2, f"fn-{n:02d}", "demo-service", "LATEST") for n in range(12)]


class Cluster:
    """Stores, ownerships and replicas on one database; everything closed after the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stores: list[PostgresStore] = []

    async def replica(self, name: str, parts: Parts | None = None) -> Replica:
        store = await self.store()
        return Replica(store, parts, Ownership(name), LEASE_S, SystemClock())

    async def store(self) -> PostgresStore:
        store = await open_postgres(self.url)
        self.stores.append(store)
        return store

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def now_ms(self) -> int:
        return int((await self.rows(f"SELECT {NOW}"))[0][0])

    async def owners(self) -> dict[int, str | None]:
        rows = await self.rows(f"SELECT slot, owner FROM slots WHERE expires_ms > {NOW}")  # noqa: S608
        return {int(slot): owner for slot, owner in rows}


@pytest.fixture
async def cluster(pg_url: str) -> AsyncIterator[Cluster]:
    made = Cluster(pg_url)
    yield made
    for store in made.stores:
        await store.close()


def pg(replica: Replica) -> PostgresStore:
    """The replica's store as what it is (for the outbox and fenced calls)."""
    assert isinstance(replica.store, PostgresStore)
    return replica.store


async def _settle(replicas: list[Replica]) -> None:
    """Two rounds of heartbeats, one replica after another: enough to rebalance."""
    for _ in range(2):
        for replica in replicas:
            await replica.beat()


# -- leases -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
async def test_replicas_split_the_slots_evenly(cluster: Cluster, count: int) -> None:
    """Each replica holds its fair share (32 and 32; 22, 21 and 21), no slot is held twice,
    and what each believes it holds is what the database says."""
    replicas = [await cluster.replica(f"r{n}") for n in range(count)]
    for replica in replicas:
        await replica.join()
    await _settle(replicas)
    held = [replica.ownership.slots() for replica in replicas]
    expected = {2: [32, 32], 3: [21, 21, 22]}[count]
    assert sorted(len(slots) for slots in held) == expected
    assert frozenset().union(*held) == frozenset(range(SLOTS))
    owners = await cluster.owners()
    for replica, slots in zip(replicas, held, strict=True):
        assert {slot for slot, owner in owners.items() if owner == replica.id} == slots


async def test_a_replica_that_stops_gracefully_hands_its_slots_back_at_once(
    cluster: Cluster,
) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await a.join()
    await b.join()
    await _settle([a, b])
    given_back = b.ownership.slots()
    assert len(given_back) == 32
    await b.leave()
    owners = await cluster.owners()
    assert not any(owners.get(slot) for slot in given_back)  # free now, not a lease later
    assert await cluster.rows("SELECT id FROM replicas") == [("a",)]
    await a.beat()  # the next heartbeat of the other one takes them all
    assert a.ownership.slots() == frozenset(range(SLOTS))


async def test_a_dead_replica_loses_its_slots_to_another_when_its_lease_ends(
    cluster: Cluster,
) -> None:
    """``b`` stops heartbeating (its loop stopped, nothing released). ``a`` heartbeats every
    third of a lease: no beat of it takes one of ``b``'s slots while ``b``'s lease runs, and
    the first beat after the lease ended takes them all, so the takeover comes within a lease
    and a heartbeat of ``b``'s last one: inside 2 x lease_s."""
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await a.join()
    await b.join()
    await _settle([a, b])
    b_slots = b.ownership.slots()
    (expires_ms,) = (await cluster.rows("SELECT MAX(expires_ms) FROM slots WHERE owner = 'b'"))[0]
    before_beats: list[tuple[int, frozenset[int]]] = []
    while not b_slots <= a.ownership.slots():
        started_ms = await cluster.now_ms()
        await a.beat()
        before_beats.append((started_ms, a.ownership.slots()))
        assert len(before_beats) < 100, "a never took b's slots"
        await asyncio.sleep(LEASE_S / 3)
    taking_ms, taken = before_beats[-1]
    assert taking_ms >= expires_ms - 5  # not before b's lease ended (a few ms of clock reads)
    assert all(not (slots & b_slots) for _, slots in before_beats[:-1])
    assert taken == frozenset(range(SLOTS))
    if len(before_beats) > 1:
        assert before_beats[-2][0] < expires_ms  # the first beat after the end took them


async def test_a_replica_without_heartbeats_for_a_lease_drops_its_slots(
    cluster: Cluster,
) -> None:
    """The database away (here: the store closed under it) for a whole lease: the replica
    holds nothing locally, so it polls nothing that another may have taken."""
    a = await cluster.replica("a")
    await a.join()
    assert len(a.ownership.slots()) == SLOTS
    await pg(a).close()
    await a.beat()  # within the lease: kept
    assert len(a.ownership.slots()) == SLOTS
    await asyncio.sleep(LEASE_S)
    await a.beat()
    assert a.ownership.slots() == frozenset()


# -- fencing ------------------------------------------------------------------------------------


def _first_sighting(ref: InvocationRef, status: str) -> decide.DiffResult:
    body = {"status": status, "events": [{"eventId": 1, "status": status}]}
    return decide.diff(None, Invocation.model_validate(body), ref=ref, observed_ms=1000)


async def _take_over(cluster: Cluster, old: Replica, new: Replica) -> None:
    """``old`` stops heartbeating; ``new`` beats until it holds everything ``old`` held."""
    held = old.ownership.slots()
    for _ in range(100):
        await new.beat()
        if held <= new.ownership.slots():
            return
        await asyncio.sleep(LEASE_S / 3)
    raise AssertionError("no takeover")


async def test_a_replica_whose_lease_was_taken_over_cannot_commit(cluster: Cluster) -> None:
    """Its fence is refused inside the transaction: ``FencedError``, and nothing of the
    commit (snapshot, transitions, outbox rows) is in the database; the new holder's commit
    of the same transitions is, recorded as its own."""
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await a.join()
    ref = InvocationRef(FUNCTIONS[0], "job-1")
    fence = a.ownership.fence(ref.function_ref)
    assert fence is not None
    await b.join()
    await _take_over(cluster, a, b)
    result = _first_sighting(ref, "Failed")
    routes = {t.id: [Target("hook")] for t in result.transitions}
    with pytest.raises(FencedError):
        await pg(a).commit_fenced(
            fence, ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=1
        )
    assert await cluster.rows("SELECT COUNT(*) FROM transitions") == [(0,)]
    assert await cluster.rows("SELECT COUNT(*) FROM invocations") == [(0,)]
    assert await cluster.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
    assert pg(a).write_health().ok  # a fence is no outage
    new_fence = b.ownership.fence(ref.function_ref)
    assert new_fence is not None and new_fence.epoch > fence.epoch
    fresh = await pg(b).commit_fenced(
        new_fence, ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=1
    )
    assert len(fresh) == len(result.transitions)
    assert set(await cluster.rows("SELECT committed_by FROM transitions")) == {("b",)}


def _config(url: str, emu_url: str) -> Config:
    return Config.model_validate(
        {
            "fc": emulator_fc(emu_url),
            "state": {"url": url, "lease_s": LEASE_S},
            "poll": {"interval_s": 10, "jitter": 0},
            "watch": [{"service": "demo-service", "function": "fn-00", "invocations": ["job-1"]}],
        }
    )


async def _parts(
    cluster: Cluster, config: Config, session: aiohttp.ClientSession, name: str
) -> tuple[Parts, Replica]:
    store = await cluster.store()
    ownership = Ownership(name)
    tracked = [Tracked(ref=InvocationRef(FUNCTIONS[0], "job-1"), labels={})]
    parts = await build(
        config, tracked, store=store, session=session, clock=SystemClock(),
        rng=random.Random(1), metrics=None, fencing=Fencing(ownership, store),
    )  # fmt: skip
    return parts, Replica(store, parts, ownership, LEASE_S, SystemClock())


async def test_a_poll_after_the_lease_was_taken_over_commits_nothing_and_drops_the_slot(
    cluster: Cluster, start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """Through the engine: ``a`` (built with ``build()``) lost its slot while it was not
    looking; its poll finds a change, its commit is fenced, it drops the slot at once and
    polls it no more. ``b`` then polls and commits it, as ``committed_by`` shows."""
    emu = await start_emulator(
        invocations=[
            {"id": "job-1", "function": "fn-00", "timeline": [{"at_s": 0, "status": "Failed"}]}
        ]
    )
    config = _config(cluster.url, emu.url)
    parts_a, a = await _parts(cluster, config, http_session, "a")
    parts_b, b = await _parts(cluster, config, http_session, "b")
    await a.join()
    await b.join()
    await _take_over(cluster, a, b)
    slot = function_slot(FUNCTIONS[0])
    assert slot in a.ownership.slots()  # a has not heard: no heartbeat since
    assert await parts_a.scheduler.poll_all() == [PollOutcome.FAILED]
    assert slot not in a.ownership.slots()
    gets = emu.stats.get("get", 0)
    assert await parts_a.scheduler.poll_all() == [PollOutcome.UNCHANGED]  # skipped: not a's
    assert emu.stats.get("get", 0) == gets
    assert await cluster.rows("SELECT COUNT(*) FROM transitions") == [(0,)]
    assert await parts_b.scheduler.poll_all() == [PollOutcome.CHANGED]
    committers = await cluster.rows("SELECT DISTINCT committed_by FROM transitions")
    assert committers == [("b",)]


# -- the outbox ---------------------------------------------------------------------------------


async def _queue(store: PostgresStore, per_function: int = 3) -> set[int]:
    """Commit ``per_function`` failed invocations of each function, one row each to "hook";
    the rows' seqs."""
    for fn in FUNCTIONS:
        for n in range(per_function):
            ref = InvocationRef(fn, f"job-{n}")
            result = _first_sighting(ref, "Failed")
            routes = {t.id: [Target("hook")] for t in result.transitions}
            await store.commit(
                ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=1
            )
    return {row.seq for row in await store.pending("hook", 10_000)}


async def test_outbox_rows_carry_their_functions_slot(cluster: Cluster) -> None:
    """The slot PostgreSQL computes for a row is the one Python hashes for its function."""
    store = await cluster.store()
    await _queue(store, per_function=1)
    rows = await cluster.rows("SELECT DISTINCT invocation_key, slot FROM outbox")
    for key, slot in rows:
        fn = next(f for f in FUNCTIONS if key.startswith(f"fc2/demo-service/{f.function}/"))
        assert slot == function_slot(fn)


async def test_two_replicas_never_claim_the_same_pending_row(cluster: Cluster) -> None:
    """Each claims only rows of its own slots, even when its memory says more, and two
    connections claiming at the same moment never get the same row."""
    a, b = await cluster.replica("a"), await cluster.replica("b")
    everything = await _queue(pg(a))
    await a.join()
    await b.join()
    await _settle([a, b])
    rows_a, rows_b = await asyncio.gather(pg(a).pending("hook", 1000), pg(b).pending("hook", 1000))
    seqs_a, seqs_b = {r.seq for r in rows_a}, {r.seq for r in rows_b}
    assert not seqs_a & seqs_b and seqs_a | seqs_b == everything
    slots = dict(await cluster.rows("SELECT seq, slot FROM outbox"))
    assert {slots[s] for s in seqs_a} <= a.ownership.slots()
    assert {slots[s] for s in seqs_b} <= b.ownership.slots()
    # A stale view (every slot, in memory) claims only what the database says is held.
    pg(a).claim_outbox_as("a", lambda: range(SLOTS), int(LEASE_S * 1000))
    assert {r.seq for r in await pg(a).pending("hook", 1000)} == seqs_a
    # A claim in a slot the database no longer gives it: nothing (a resumed, stale one).
    await _take_over(cluster, a, b)
    assert await pg(a).pending("hook", 1000) == []


async def test_a_dead_claimants_rows_go_out_again_after_the_claim_lease(cluster: Cluster) -> None:
    """``a`` claimed rows and died: ``b``, now holding every slot, gets none of them while
    the claim runs, all of them after; ``a``'s late mark changes nothing of ``b``'s claim."""
    a, b = await cluster.replica("a"), await cluster.replica("b")
    everything = await _queue(pg(a))
    await a.join()
    claimed = {r.seq for r in await pg(a).pending("hook", 1000)}
    assert claimed == everything
    (until_ms,) = (await cluster.rows("SELECT MIN(claim_until_ms) FROM outbox"))[0]
    await b.join()
    await _take_over(cluster, a, b)
    while await cluster.now_ms() < until_ms:
        assert await pg(b).pending("hook", 1000) == []
        await asyncio.sleep(0.2)
        await b.beat()  # b's own lease runs on meanwhile
    assert {r.seq for r in await pg(b).pending("hook", 1000)} == everything
    await pg(a).mark_sent(everything, 5)
    assert await cluster.rows("SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == [
        (len(everything),)
    ]
    await pg(b).mark_sent(everything, 5)
    assert await cluster.rows("SELECT DISTINCT state FROM outbox") == [("sent",)]


# -- status -------------------------------------------------------------------------------------


async def test_status_on_postgresql_shows_the_replicas_their_slots_and_heartbeats(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = await cluster.replica("host-a-1"), await cluster.replica("host-b-2")
    await a.join()
    await b.join()
    await _settle([a, b])
    config = {
        "fc": emulator_fc("http://127.0.0.1:9"),
        "state": {"url": cluster.url, "lease_s": LEASE_S},
        "watch": [{"service": "demo-service", "function": "fn-00", "invocations": ["job-1"]}],
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    assert await asyncio.to_thread(postgres_status, path, out, as_json=False)
    text = out.getvalue()
    for replica in (a, b):
        ranges = slot_ranges(sorted(replica.ownership.slots()))
        line = next(line for line in text.splitlines() if replica.id in line)
        assert ranges in line and " 32 " in line and "s ago" in line and "live" in line
    assert "slots held: 64 of 64" in text
    out = io.StringIO()
    assert await asyncio.to_thread(postgres_status, path, out, as_json=True)
    shown = json.loads(out.getvalue())
    assert {r["id"]: set(r["slots"]) for r in shown["replicas"]} == {
        a.id: set(a.ownership.slots()),
        b.id: set(b.ownership.slots()),
    }
    sqlite = tmp_path / "sqlite.yaml"
    sqlite.write_text(yaml.safe_dump({**config, "state": {"path": str(tmp_path / "s.db")}}))
    assert not await asyncio.to_thread(postgres_status, sqlite, io.StringIO(), as_json=False)


def test_slot_ranges_are_compact() -> None:
    assert slot_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slot_ranges([]) == "-"
    assert slot_ranges([63]) == "63"


# -- PostgreSQL away ----------------------------------------------------------------------------


async def test_postgresql_away_stops_polling_after_a_lease_and_work_resumes_when_back(
    own_pg_server: PgServer,
    new_pg_database: Callable[[PgServer], Awaitable[str]],
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
) -> None:
    """The server stops: heartbeats fail, readiness says the state DB is failing, and once a
    lease has gone by without one the replica holds and polls nothing (another may have its
    slots). The server starts again: the next heartbeat takes the slots back, the replica
    reads back what is in the database and polls again, and its commit lands."""
    url = await new_pg_database(own_pg_server)
    cluster = Cluster(url)
    try:
        emu = await start_emulator(
            invocations=[
                {"id": "job-1", "function": "fn-00", "timeline": [{"at_s": 0, "status": "Failed"}]}
            ]
        )
        config = _config(url, emu.url)
        parts, a = await _parts(cluster, config, http_session, "a")
        await a.join()
        own_pg_server.stop()
        await a.beat()
        assert a.ownership.slots()  # within the lease: still held
        why = readiness(parts, pg(a), config, SystemClock())
        assert why is not None and "state DB failing" in why
        await asyncio.sleep(LEASE_S)
        await a.beat()
        assert a.ownership.slots() == frozenset()
        gets = emu.stats.get("get", 0)
        assert await parts.scheduler.poll_all() == [PollOutcome.UNCHANGED]
        assert emu.stats.get("get", 0) == gets  # nothing polled while not safe
        own_pg_server.start()
        await a.beat()
        assert a.ownership.slots() == frozenset(range(SLOTS))
        assert pg(a).write_health().ok
        assert await parts.scheduler.poll_all() == [PollOutcome.CHANGED]
        assert await cluster.rows("SELECT DISTINCT committed_by FROM transitions") == [("a",)]
    finally:
        for store in cluster.stores:
            await store.close()


# -- two daemons ----------------------------------------------------------------------------------


def _daemon_config(tmp_path: Path, name: str, url: str, emu_url: str, hook: str) -> Path:
    config = {
        "fc": emulator_fc(emu_url),
        "state": {"url": url, "lease_s": LEASE_S, "replica_id": name},
        "poll": {"interval_s": 0.1, "max_interval_s": 0.2, "jitter": 0.1},
        "watch": [
            {
                "service": "demo-service",
                "function": fn.function,
                "qualifier": "LATEST",
                "invocations": [f"job-{fn.function}-{n}" for n in range(2)],
            }
            for fn in FUNCTIONS[:8]
        ],
        "sinks": [{"name": "hook", "type": "webhook", "url": hook, "backoff_base_s": 0.05}],
        "routes": [{"sinks": ["hook"]}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``check``; a bound only so that a broken run fails rather than hangs."""
    for _ in range(1500):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def test_two_daemons_share_the_work_and_a_stopping_one_hands_it_over(
    cluster: Cluster, start_emulator: EmulatorFactory, receiver: Receiver, tmp_path: Path
) -> None:
    """Two watchers (the service, as ``fc-watcher run`` wires it) on one PostgreSQL: once the
    slots are split, each commits for the functions of its own slots, and every transition
    reaches the receiver once. One stops (SIGTERM's path): its slots are free at once, the
    other takes them and reports what happens next to those functions too."""
    timeline = [{"at_s": 0, "status": "Running"}, {"at_s": 10, "status": "Retrying"},
                {"at_s": 20, "status": "Failed"}]  # fmt: skip
    emu = await start_emulator(
        invocations=[
            {"id": f"job-{fn.function}-{n}", "function": fn.function, "timeline": timeline}
            for fn in FUNCTIONS[:8]
            for n in range(2)
        ]
    )
    watchers: list[Watcher] = []
    tasks: list[asyncio.Task[None]] = []
    stops: list[asyncio.Event] = []
    try:
        for name in ("w1", "w2"):
            path = _daemon_config(tmp_path, name, cluster.url, emu.url, receiver.url + "/hook")
            watchers.append(Watcher(load_config(path)))
            await watchers[-1].startup()
            stops.append(asyncio.Event())
            tasks.append(asyncio.create_task(watchers[-1].run_until_stopped(stops[-1])))
        await _until(lambda: _split(cluster), "the slots split 32/32")
        await _until(lambda: _count(cluster, "Running", 16), "every invocation seen Running")
        owners = await cluster.owners()
        emu.clock.advance(10)
        await _until(lambda: _count(cluster, "Retrying", 16), "every invocation seen Retrying")
        await _until(lambda: _delivered_all(cluster, receiver), "every transition delivered")
        by = await _committers(cluster, "Retrying")
        assert by == {k: owners[function_slot(_function(k))] for k in by}
        assert set(by.values()) == {"w1", "w2"}
        stops[1].set()
        await tasks.pop()
        await watchers.pop().shutdown()
        assert "w2" not in (await cluster.owners()).values()  # handed back at once
        emu.clock.advance(10)
        await _until(lambda: _count(cluster, "Failed", 16), "every invocation seen Failed")
        await _until(lambda: _delivered_all(cluster, receiver), "every transition delivered")
        assert set((await _committers(cluster, "Failed")).values()) == {"w1"}
        webhook_ids = _webhook_ids(receiver)
        assert len(webhook_ids) == len(set(webhook_ids))  # graceful handovers: none twice
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
        for watcher in watchers:
            await watcher.shutdown()


def _function(key: str) -> FunctionRef:
    return next(fn for fn in FUNCTIONS if key.startswith(f"fc2/demo-service/{fn.function}/"))


def _webhook_ids(receiver: Receiver) -> list[str]:
    return [{k.lower(): v for k, v in h.items()}["webhook-id"] for _, h, _ in receiver.requests]


async def _split(cluster: Cluster) -> bool:
    return sorted(Counter((await cluster.owners()).values()).values()) == [32, 32]


async def _delivered_all(cluster: Cluster, receiver: Receiver) -> bool:
    ids = {row[0] for row in await cluster.rows("SELECT id FROM transitions")}
    return bool(ids) and ids == set(_webhook_ids(receiver)) and await _done(cluster)


async def _committers(cluster: Cluster, status: str) -> dict[str, str]:
    """Who committed each invocation's change to ``status``, by invocation key."""
    rows = await cluster.rows(
        "SELECT invocation_key, committed_by FROM transitions "
        "WHERE type = 'invocation.status_changed' AND data LIKE $1",
        f'%"status":"{status}"%',
    )
    return dict(rows)


async def _count(cluster: Cluster, status: str, count: int) -> bool:
    rows = await cluster.rows("SELECT COUNT(*) FROM invocations WHERE status = $1", status)
    return int(rows[0][0]) == count


async def _done(cluster: Cluster) -> bool:
    rows = await cluster.rows("SELECT COUNT(*) FROM outbox WHERE state != 'sent'")
    return int(rows[0][0]) == 0
