"""The state store's behaviour, the same on both backends: every test here runs against SQLite
and against a real PostgreSQL (``tests.pg``), through the ``StateStore`` protocol only.

Commit and its fresh transitions, duplicates not doubled, the outbox lifecycle, order per
(sink, invocation), the backlog counts, redeliver, retention, live ids and watermarks,
silences, durability across a reopen, and write health through an outage (SQLite: the file
held by another process; PostgreSQL: the server stopped, then started again). The tests
specific to one backend follow at the end (PostgreSQL's migrations, passwords, reconnects);
SQLite's own (corrupt files, read-only files) stay in test_store.py.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import pytest
from structlog.testing import capture_logs

from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Snapshot
from watcher.core.route import RouteMatch, Target
from watcher.core.silence import SilenceSpec
from watcher.store.errors import FailureKind, StateStoreError
from watcher.store.postgres import open_postgres
from watcher.store.postgres.diagnose import CONNECTION_LOST
from watcher.store.protocols import StateStore
from watcher.store.records import LiveItem, SinkBacklog, SinkHealthRecord, WriteHealth
from watcher.store.retention import prune_once
from watcher.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from tests.pg import PgServer

# The server fixtures, once for the session (a no-op once tests/conftest.py lists it too).
pytest_plugins = ["tests.pg"]

NOW_MS = 1_795_680_000_000
DAY_MS = 86_400_000
OLD_MS = NOW_MS - 40 * DAY_MS
RECENT_MS = NOW_MS - 1 * DAY_MS
FN = FunctionRef(Api.FC2, "fn", "svc", "LATEST")
FC3 = FunctionRef(Api.FC3, "transcode")
REF = InvocationRef(FN, "job-1")
SINKS = ("log", "hook")


class Store(StateStore, Protocol):
    """What both backends offer: the protocol, and the snapshots of a few keys."""

    async def load_snapshots_of(self, keys: Collection[str]) -> dict[str, Snapshot]: ...


class StepClock:
    """The store's clock, moved by the test: no sleeping."""

    def __init__(self, wall: int = 100_000) -> None:
        self.now_s = wall / 1000

    def monotonic(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return int(self.now_s * 1000)


class Backend:
    """One backend's state: opens stores on it (each closed after the test) and reads its
    tables directly, as an operator would, to check what the store says."""

    def __init__(self, name: str, path: Path, url: str) -> None:
        self.name, self.path, self.url = name, path, url
        self.opened: list[Store] = []

    async def open(self, clock: StepClock | None = None) -> Store:
        store: Store
        if self.name == "sqlite":
            store = await SqliteStore.open(self.path, busy_timeout_s=0.1, clock=clock)
        else:
            store = await open_postgres(self.url, clock=clock)
        self.opened.append(store)
        return store

    async def reopen(self, store: Store) -> Store:
        await store.close()
        self.opened.remove(store)
        return await self.open()

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (no parameters: the tests' values are plain literals)."""
        if self.name == "sqlite":
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return [tuple(row) for row in db.execute(sql)]
            finally:
                db.close()
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def table_counts(self) -> dict[str, int]:
        """Outbox rows by state, counted by scanning the table (not the kept counts)."""
        rows = await self.query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        return {str(state): int(count) for state, count in rows}

    async def history_of(self, key: str) -> tuple[int, int]:
        """(transitions, outbox rows) of one invocation, counted in the tables."""
        where = f"WHERE invocation_key = '{key}'"
        logged = await self.query(f"SELECT COUNT(*) FROM transitions {where}")  # noqa: S608
        queued = await self.query(f"SELECT COUNT(*) FROM outbox {where}")  # noqa: S608
        return int(logged[0][0]), int(queued[0][0])


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend in turn: a fresh SQLite file, or a fresh database on the session's server."""
    url = ""
    if request.param == "postgres":
        create = request.getfixturevalue("new_pg_database")
        url = await create(request.getfixturevalue("pg_server"))
    chosen = Backend(request.param, tmp_path / "state.db", url)
    yield chosen
    for store in chosen.opened:
        await store.close()


def _ref(invocation_id: str, fn: FunctionRef = FN) -> InvocationRef:
    return InvocationRef(fn, invocation_id)


def _seen(ref: InvocationRef, status: str, observed_ms: int, retried: int = 0) -> decide.DiffResult:
    """A first sighting in ``status`` with one event: a status change and an event."""
    body = {
        "status": status,
        "alreadyRetriedTimes": retried,
        "events": [{"eventId": 1, "status": status}],
    }
    return decide.diff(None, Invocation.model_validate(body), ref=ref, observed_ms=observed_ms)


def _failed() -> decide.DiffResult:
    return _seen(REF, "Failed", 1000, retried=1)


async def _commit(
    store: Store,
    result: decide.DiffResult,
    sinks: Iterable[str] = ("log",),
    ref: InvocationRef = REF,
    now_ms: int = 1000,
) -> list[str]:
    routes = {t.id: [Target(sink) for sink in sinks] for t in result.transitions}
    fresh = await store.commit(
        ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=now_ms
    )
    return [t.id for t in fresh]


# -- commit, durability, the outbox ------------------------------------------------------------


async def test_commit_persists_snapshot_transitions_and_outbox(backend: Backend) -> None:
    """One commit writes all three and returns the fresh transitions; a reopened store reads
    them back exactly."""
    result = _failed()
    store = await backend.open()
    assert await _commit(store, result, SINKS) == [t.id for t in result.transitions]
    store = await backend.reopen(store)
    assert await store.load_snapshots() == {REF.key: result.snapshot}
    assert await store.transitions() == list(result.transitions)
    assert await store.outbox_counts() == {"pending": 2 * len(result.transitions)}
    pending = await store.pending("hook", 10)
    assert [row.transition_id for row in pending] == [t.id for t in result.transitions]
    loaded = await store.load_transitions([row.transition_id for row in pending])
    assert [loaded[row.transition_id] for row in pending] == list(result.transitions)
    (row,) = await store.invocation_rows()
    assert (row.key, row.service, row.function, row.invocation_id) == (
        REF.key,
        "svc",
        "fn",
        "job-1",
    )
    assert row.snapshot == result.snapshot and row.last_polled_ms == 1000


async def test_recommitting_the_same_ids_adds_nothing(backend: Backend) -> None:
    """A re-derived transition (after a crash) is neither inserted nor queued twice, and is not
    returned as fresh; one new transition beside it is."""
    store = await backend.open()
    result = _failed()
    await _commit(store, result, SINKS)
    assert await _commit(store, result, SINKS) == []
    later = decide.diff(
        result.snapshot,
        Invocation.model_validate({"status": "Failed", "alreadyRetriedTimes": 2}),
        ref=REF,
        observed_ms=2000,
    )
    assert later.transitions
    both = decide.DiffResult(later.snapshot, (*result.transitions, *later.transitions))
    assert await _commit(store, both, SINKS) == [t.id for t in later.transitions]
    total = len(result.transitions) + len(later.transitions)
    assert len(await store.transitions()) == total
    assert await store.outbox_counts() == {"pending": 2 * total}
    assert await backend.table_counts() == {"pending": 2 * total}


async def test_outbox_state_changes(backend: Backend) -> None:
    """Rows move to sent, retry (attempts counted) or dead, and leave the pending list; the
    dead letter is listed with its transition's type."""
    store = await backend.open()
    result = _failed()
    await _commit(store, result)
    first, second = await store.pending("log", 10)
    await store.mark_retry([first.seq], 5000, "HTTP 500")
    await store.mark_sent([second.seq], 6000)
    (again,) = await store.pending("log", 10)
    assert (again.seq, again.attempts, again.next_attempt_ms) == (first.seq, 1, 5000)
    await store.mark_dead([first.seq], 7000, "gone")
    assert await store.pending("log", 10) == []
    assert await store.outbox_counts() == {"sent": 1, "dead": 1}
    types = {t.id: t.type.value for t in result.transitions}
    (letter,) = await store.dead_letters()
    assert (letter.seq, letter.sink, letter.attempts, letter.last_error) == (
        first.seq,
        "log",
        2,
        "gone",
    )
    assert (letter.dead_ms, letter.type) == (7000, types[first.transition_id])
    await store.mark_sent([], 8000)  # nothing to mark: no write, no error


async def test_own_failures_are_counted_apart_from_attempts(backend: Backend) -> None:
    """A failure the sink's outage caused counts as an attempt, not as the row's own failure;
    redeliver starts both afresh; a sink's circuit round-trips, one row per sink."""
    store = await backend.open()
    await _commit(store, _failed(), ("hook",))
    first, _ = await store.pending("hook", 10)
    await store.mark_retry([first.seq], 5000, "HTTP 500")
    await store.mark_retry([first.seq], 6000, "cannot reach", own_failure=False)
    again, _ = await store.pending("hook", 10)
    assert (again.attempts, again.row_failures, again.next_attempt_ms) == (2, 1, 6000)
    assert await store.pending_count("hook") == 2
    await store.mark_dead([first.seq], 7000, "gone")
    assert await store.redeliver(sink="other", transition_id=None, now_ms=8000) == 0
    assert await store.redeliver(sink="hook", transition_id=first.transition_id, now_ms=8000) == 1
    redelivered, _ = await store.pending("hook", 10)
    assert (redelivered.attempts, redelivered.row_failures, redelivered.created_ms) == (0, 0, 8000)
    down = SinkHealthRecord("hook", False, 100, 90, "HTTP 503")
    await store.save_sink_health(down)
    assert await store.sink_health() == [down]
    up = SinkHealthRecord("hook", True, 200, 200, "HTTP 503")
    await store.save_sink_health(up)
    assert await store.sink_health() == [up]


async def test_rows_of_one_invocation_go_out_in_commit_order(backend: Backend) -> None:
    """Polls of two invocations committed interleaved: each sink's pending rows of one
    invocation are in the order they were committed."""
    store = await backend.open()
    a, b = _ref("a"), _ref("b")
    statuses = ("Enqueued", "Running", "Retrying", "Failed")
    previous: dict[str, Any] = {a.key: None, b.key: None}
    expected: dict[str, list[str]] = {a.key: [], b.key: []}
    for n, status in enumerate(statuses):
        for ref in (a, b) if n % 2 else (b, a):
            body = {"status": status, "alreadyRetriedTimes": n}
            result = decide.diff(
                previous[ref.key], Invocation.model_validate(body), ref=ref, observed_ms=1000 + n
            )
            previous[ref.key] = result.snapshot
            expected[ref.key] += await _commit(store, result, SINKS, ref=ref, now_ms=1000 + n)
    for sink in SINKS:
        rows = await store.pending(sink, 100)
        for key, ids in expected.items():
            assert [r.transition_id for r in rows if r.invocation_key == key] == ids
        assert [r.seq for r in rows] == sorted(r.seq for r in rows)


async def test_backlog_counts_follow_every_change(backend: Backend) -> None:
    """The kept counts, the cached backlog and a read of it agree with a scan of the table
    after commits, sends, retries, dead letters and a redeliver."""
    store = await backend.open()
    await _commit(store, _failed(), SINKS, now_ms=1000)
    b = _ref("b")
    await _commit(store, _seen(b, "Failed", 2000), ("hook",), ref=b, now_ms=2000)
    hook = await store.pending("hook", 10)
    assert len(hook) == 4
    await store.mark_sent([hook[0].seq], 3000)
    await store.mark_dead([hook[1].seq], 3000, "gone")
    await store.mark_retry([hook[2].seq], 9000, "HTTP 500")
    expected = [SinkBacklog("hook", 2, 1, 2000), SinkBacklog("log", 2, 0, 1000)]
    assert list(store.cached_backlog()) == expected
    assert await store.outbox_by_sink() == expected
    assert await store.pending_count("hook") == 2
    assert await store.outbox_counts() == {"pending": 4, "sent": 1, "dead": 1}
    assert await backend.table_counts() == {"pending": 4, "sent": 1, "dead": 1}
    assert await store.redeliver(sink=None, transition_id=None, now_ms=4000) == 1
    assert list(store.cached_backlog()) == [
        SinkBacklog("hook", 3, 0, 2000),
        SinkBacklog("log", 2, 0, 1000),
    ]
    assert await backend.table_counts() == await store.outbox_counts() == {"pending": 5, "sent": 1}
    store = await backend.reopen(store)  # the cache is filled at open
    assert list(store.cached_backlog()) == [
        SinkBacklog("hook", 3, 0, 2000),
        SinkBacklog("log", 2, 0, 1000),
    ]


async def test_record_polled_only_moves_forward(backend: Backend) -> None:
    """Last-poll times are written in a batch, never back in time, unknown keys ignored."""
    store = await backend.open()
    await _commit(store, _failed(), now_ms=5000)
    await store.record_polled({REF.key: 9000, "fc2/svc/fn/LATEST/unknown": 9000})
    await store.record_polled({REF.key: 7000})
    await store.record_polled({})
    (row,) = await store.invocation_rows()
    assert row.last_polled_ms == 9000


# -- retention -------------------------------------------------------------------------------


class FixedClock:
    """Wall time that stays at ``wall``: the cutoff is then exact."""

    def monotonic(self) -> float:
        return 0.0

    def wall_ms(self) -> int:
        return NOW_MS


async def _settle(
    store: Store, key: str, *, pending: str | None = None, dead: str | None = None
) -> None:
    """Mark every outbox row of ``key`` sent, but the first of sink ``pending`` (left pending)
    and the first of sink ``dead`` (dead-lettered)."""
    for sink in SINKS:
        rows = [row for row in await store.pending(sink, 1000) if row.invocation_key == key]
        assert rows, f"no pending rows of {key} for {sink}"
        if sink == pending:
            rows = rows[1:]
        if sink == dead:
            await store.mark_dead([rows[0].seq], NOW_MS, "gave up")
            rows = rows[1:]
        await store.mark_sent([row.seq for row in rows], NOW_MS)


async def test_prunes_old_finished_and_keeps_pending_dead_recent_running_and_tracked(
    backend: Backend,
) -> None:
    """Only old finished invocations with every row sent lose their history; a tracked one
    keeps its snapshot; the kept counts match the table afterwards."""
    store = await backend.open()
    cases = {
        "old-done": _seen(_ref("old-done"), "Succeeded", OLD_MS),
        "old-pending": _seen(_ref("old-pending"), "Failed", OLD_MS),
        "old-dead": _seen(_ref("old-dead"), "Failed", OLD_MS),
        "recent-done": _seen(_ref("recent-done"), "Succeeded", RECENT_MS),
        "old-running": _seen(_ref("old-running"), "Running", OLD_MS),
        "old-tracked": _seen(_ref("old-tracked"), "Stopped", OLD_MS),
        "old-gone": decide.not_found(
            None, ref=_ref("old-gone"), observed_ms=OLD_MS, report_after=1
        ),
    }
    keys = {name: _ref(name).key for name in cases}
    for name, result in cases.items():
        await _commit(store, result, SINKS, ref=_ref(name), now_ms=result.snapshot.changed_ms)
        pending = "hook" if name == "old-pending" else None
        await _settle(
            store, keys[name], pending=pending, dead="hook" if name == "old-dead" else None
        )
    assert await store.outbox_counts() == {"sent": 24, "pending": 1, "dead": 1}

    pruned = await prune_once(
        store, retention_days=30, protected_keys={keys["old-tracked"]}, clock=FixedClock()
    )

    assert pruned == 2  # old-done and old-gone; old-tracked's snapshot stays
    kept = {"old-pending", "old-dead", "recent-done", "old-running", "old-tracked"}
    assert await store.load_snapshots() == {keys[name]: cases[name].snapshot for name in kept}
    for name in ("old-done", "old-gone", "old-tracked"):
        assert await backend.history_of(keys[name]) == (0, 0), name
    for name in kept - {"old-tracked"}:
        assert await backend.history_of(keys[name]) == (2, 4), name
    assert await store.outbox_counts() == {"sent": 14, "pending": 1, "dead": 1}
    assert await backend.table_counts() == {"sent": 14, "pending": 1, "dead": 1}
    assert [d.invocation_key for d in await store.dead_letters()] == [keys["old-dead"]]
    expected_backlog = [SinkBacklog("hook", 1, 1, OLD_MS), SinkBacklog("log", 0, 0, 0)]
    assert list(store.cached_backlog()) == expected_backlog
    assert await store.outbox_by_sink() == expected_backlog
    # Once no longer tracked, old-tracked's snapshot goes too.
    assert await prune_once(store, retention_days=30, protected_keys=(), clock=FixedClock()) == 1
    assert set(await store.load_snapshots()) == {keys[name] for name in kept - {"old-tracked"}}


async def test_prunes_in_batches_until_done(backend: Backend) -> None:
    """Batches of 2 over 5 prunable and 2 protected invocations: every prunable one goes, the
    pages move on past protected keys, and the last page says the scan is complete."""
    store = await backend.open()
    results = {}
    for n in range(7):
        ref = _ref(f"job-{n}")
        results[ref.key] = _seen(ref, "Succeeded", OLD_MS)
        await _commit(store, results[ref.key], SINKS, ref=ref, now_ms=OLD_MS)
        await _settle(store, ref.key)
    protected = {_ref("job-1").key, _ref("job-4").key}
    batches = []
    after: str | None = None
    while True:
        batch = await store.prune(
            changed_before_ms=NOW_MS - 30 * DAY_MS,
            protected_keys=protected,
            after_key=after,
            batch=2,
        )
        batches.append(batch)
        if batch.next_after_key is None:
            break
        after = batch.next_after_key
    assert [b.next_after_key is None for b in batches] == [False, False, False, True]
    assert [b.invocations for b in batches] == [1, 2, 1, 1]  # job-1 and job-4 stay
    assert sum(b.transitions for b in batches) == 7 * 2
    assert sum(b.outbox_rows for b in batches) == 7 * 2 * len(SINKS)
    assert await store.load_snapshots() == {key: results[key].snapshot for key in protected}
    assert await store.transitions() == []
    assert await store.outbox_counts() == {} == await backend.table_counts()
    assert list(store.cached_backlog()) == []


# -- live ids, watermarks, silences ----------------------------------------------------------


def _live(*ids: str, fn: FunctionRef = FC3, **labels: str) -> list[LiveItem]:
    return [LiveItem(InvocationRef(fn, i), labels) for i in ids]


async def test_live_ids_and_watermarks_survive_a_reopen(backend: Backend) -> None:
    """Registered ids (with labels) and watermarks are durable: a reopened store reads every
    live id from revision 0, and each entry's watermark, as they were written."""
    store = await backend.open()
    assert await store.track_live(_live("t-1", "t-2", team="media"), now_ms=1000) == 2
    assert await store.track_live(_live("j-1", fn=FN), now_ms=1000) == 1
    await store.save_watermark("watch[0]", 5000, now_ms=1000)
    await store.save_watermark("watch[0]", 7000, now_ms=2000)
    await store.save_watermark("watch[1]", 6000, now_ms=2000)
    store = await backend.reopen(store)
    rev, changes = await store.live_changes(0)
    assert rev > 0
    assert {c.ref.key: (c.tracked, dict(c.labels)) for c in changes} == {
        "fc3//transcode//t-1": (True, {"team": "media"}),
        "fc3//transcode//t-2": (True, {"team": "media"}),
        "fc2/svc/fn/LATEST/j-1": (True, {}),
    }
    assert await store.live_changes(rev) == (rev, [])
    assert await store.load_watermarks() == {"watch[0]": 7000, "watch[1]": 6000}
    await store.save_daemon_info({"api_demand": "12.5", "stretch": "1.0"}, now_ms=3000)
    await store.save_daemon_info({"api_demand": "13"}, now_ms=4000)
    info = await backend.query("SELECT key, value, updated_ms FROM daemon_info ORDER BY key")
    assert info == [("api_demand", "13", 4000), ("stretch", "1.0", 3000)]


async def test_untrack_then_track_again(backend: Backend) -> None:
    """Tracking is idempotent; an untrack is a change a daemon hears of, and a second
    registration counts as new again, with a higher revision each time."""
    store = await backend.open()
    assert await store.track_live(_live("t-1", "t-2"), now_ms=1000) == 2
    first, _ = await store.live_changes(0)
    assert await store.track_live(_live("t-1", "t-2"), now_ms=1100) == 0
    assert await store.live_changes(first) == (first, [])  # nothing changed: no revision
    ref = InvocationRef(FC3, "t-1")
    assert await store.untrack_live([ref, InvocationRef(FC3, "never")], now_ms=1200) == 1
    assert await store.untrack_live([ref], now_ms=1300) == 0
    second, changes = await store.live_changes(first)
    assert second > first
    assert [(c.ref, c.tracked) for c in changes] == [(ref, False)]
    assert [c.ref.invocation_id for c in (await store.live_changes(0))[1]] == ["t-2"]
    assert await store.track_live(_live("t-1", team="b"), now_ms=1400) == 1
    third, changes = await store.live_changes(second)
    assert third > second
    assert [(c.ref, c.tracked, dict(c.labels)) for c in changes] == [(ref, True, {"team": "b"})]
    assert await store.track_live(_live("t-1", team="c"), now_ms=1500) == 0  # new labels only
    fourth, changes = await store.live_changes(third)
    assert fourth > third
    assert [(c.tracked, dict(c.labels)) for c in changes] == [(True, {"team": "c"})]


async def test_retention_deletes_old_removed_live_rows_and_never_reuses_a_revision(
    backend: Backend,
) -> None:
    """A removal older than the cut is deleted (a live id still tracked is not); the next
    change still gets a higher revision than any a daemon has seen."""
    store = await backend.open()
    await store.track_live(_live("old", "kept"), now_ms=1000)
    await store.untrack_live([InvocationRef(FC3, "old")], now_ms=1000)
    await store.track_live(_live("recent"), now_ms=1000)
    await store.untrack_live([InvocationRef(FC3, "recent")], now_ms=9000)
    seen, _ = await store.live_changes(0)
    await store.prune(changed_before_ms=5000, protected_keys=(), after_key=None, batch=10)
    rows = await backend.query("SELECT invocation_id FROM live")
    assert sorted(row[0] for row in rows) == ["kept", "recent"]
    await store.track_live(_live("new"), now_ms=9500)
    after, changes = await store.live_changes(seen)
    assert after > seen
    assert [c.ref.invocation_id for c in changes] == ["new"]


async def test_snapshots_of_reads_only_the_keys_asked(backend: Backend) -> None:
    """Live tracking gets the stored snapshot of a key seen before, without reading all."""
    store = await backend.open()
    result = _failed()
    await _commit(store, result)
    assert await store.load_snapshots_of([REF.key, "fc3//x//nope"]) == {REF.key: result.snapshot}
    assert await store.load_snapshots_of([]) == {}


def _spec(starts_ms: int, ends_ms: int, function: str = "transcode") -> SilenceSpec:
    match = RouteMatch.model_validate({"function": function})
    return SilenceSpec(match, starts_ms, ends_ms, "deploy window", "ops")


async def test_silences_are_durable_revisioned_and_pruned(backend: Backend) -> None:
    """A silence is kept with a new id, listed while not ended, ended early once only, heard
    of by revision (shared with live ids), and pruned once ended before the cut."""
    store = await backend.open()
    base, _ = await store.silence_changes(0, now_ms=1000)
    first = await store.add_silence(_spec(1000, 50_000), now_ms=1000)
    later = await store.add_silence(_spec(60_000, 90_000, "other"), now_ms=1000)
    assert len(first.id) == 12 and first.id != later.id
    assert [s.id for s in await store.list_silences(ended_after_ms=2000)] == [first.id, later.id]
    rev, changed = await store.silence_changes(base, now_ms=2000)
    assert rev > base and [s.id for s in changed] == [first.id, later.id]
    store = await backend.reopen(store)
    ended = await store.expire_silence(first.id, now_ms=3000)
    assert ended.expired and ended.silence is not None and ended.silence.expired_ms == 3000
    again = await store.expire_silence(first.id, now_ms=4000)
    assert not again.expired and again.silence is not None and again.silence.expired_ms == 3000
    assert (await store.expire_silence("000000000000", now_ms=4000)).silence is None
    after, changed = await store.silence_changes(rev, now_ms=4000)
    assert after > rev and [(s.id, s.expired_ms) for s in changed] == [(first.id, 3000)]
    assert [s.id for s in await store.list_silences(ended_after_ms=4000)] == [later.id]
    assert [s.id for s in (await store.silence_changes(0, now_ms=4000))[1]] == [later.id]
    await store.track_live(_live("t-1"), now_ms=4000)
    live_rev, _ = await store.live_changes(0)
    assert live_rev > after  # one counter for both
    await store.prune(changed_before_ms=70_000, protected_keys=(), after_key=None, batch=10)
    assert [row[0] for row in await backend.query("SELECT id FROM silences")] == [later.id]


# -- write health ----------------------------------------------------------------------------


async def test_failed_writes_make_the_store_unhealthy_until_one_succeeds(
    backend: Backend, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes failing (SQLite: the file held by another process; PostgreSQL: the server
    stopped): unhealthy, with the kind, the reason in one line, since when and the count, one
    log line however many fail, and no other (no driver traceback). Once the cause is gone, a
    read after a quiet interval probes with a write, which succeeds: healthy again, said once,
    and nothing lost."""
    clock = StepClock()
    holder: sqlite3.Connection | None = None
    server: PgServer | None = None
    if backend.name == "postgres":
        server = request.getfixturevalue("own_pg_server")
        backend.url = await request.getfixturevalue("new_pg_database")(server)
    store = await backend.open(clock)
    assert store.write_health() == WriteHealth()
    if server is not None:
        server.stop()
    else:
        holder = sqlite3.connect(backend.path, isolation_level=None, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(StateStoreError) as caught:
                await _commit(store, _failed())
            clock.now_s += 1
        failing = store.write_health()
        if server is not None:
            server.start()
        elif holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        await store.outbox_counts()
        still = store.write_health()  # a write was tried 1 s ago: no probe yet
        clock.now_s += 10
        await store.outbox_counts()
    kind = FailureKind.LOCKED if server is None else CONNECTION_LOST
    assert (failing.ok, failing.kind, failing.failing_writes) == (False, kind.value, 3)
    assert caught.value.kind is kind and "\n" not in str(caught.value)
    assert failing.since_ms == 100_000 and failing.reason == str(caught.value)
    assert dict(failing.failed_by_kind) == {kind.value: 3}
    assert not still.ok
    healed = store.write_health()
    assert healed.ok and dict(healed.failed_by_kind) == {kind.value: 3}
    assert [e["event"] for e in logs] == ["state_write_failed", "state_write_recovered"]
    assert logs[0]["write"] == "commit" and logs[1]["failed_writes"] == 3
    assert await _commit(store, _failed())  # nothing was lost or half-written
    if server is not None:
        assert server.password not in repr(logs) + str(caught.value)
    # Nothing else said it, least of all a driver's traceback per reconnect attempt.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- PostgreSQL only -------------------------------------------------------------------------


async def _pg_scalar(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    """Four stores opened at once on an empty database: one migrates under the advisory lock,
    the others wait and find the schema current; all of them work."""
    from watcher.store.postgres import SCHEMA_VERSION

    stores = await asyncio.gather(*(open_postgres(pg_url) for _ in range(4)))
    try:
        assert await _pg_scalar(pg_url, "SELECT version FROM fc_watcher_schema") == SCHEMA_VERSION
        for n, store in enumerate(stores):
            ref = _ref(f"r-{n}")
            assert await _commit(store, _seen(ref, "Failed", 1000), ref=ref)
        assert len(await stores[0].load_snapshots()) == 4
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_schema_is_refused(pg_url: str) -> None:
    """A database migrated by a newer fc-watcher is refused in one line, untouched."""
    from watcher.store.postgres import SCHEMA_VERSION

    await (await open_postgres(pg_url)).close()
    conn = await asyncpg.connect(pg_url)
    await conn.execute("UPDATE fc_watcher_schema SET version = version + 1")
    await conn.close()
    with pytest.raises(StateStoreError, match="newer than this fc-watcher") as caught:
        await open_postgres(pg_url)
    assert "\n" not in str(caught.value)
    assert await _pg_scalar(pg_url, "SELECT version FROM fc_watcher_schema") == SCHEMA_VERSION + 1


async def test_the_password_never_shows(
    pg_url: str, pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password is one line that says what to check and shows no password; the store's
    repr names user, host, port and database only; a password may come from PGPASSFILE or be
    passed apart from the URL (a ``*_file`` secret)."""
    database = pg_url.rsplit("/", 1)[1]
    wrong = pg_server.url(database, password="Wr0ng-pass%2Fword")
    with pytest.raises(StateStoreError, match="check the user and password") as caught:
        await open_postgres(wrong)
    message = str(caught.value)
    assert "Wr0ng" not in message and "\n" not in message
    assert f"postgresql://fcw@127.0.0.1:{pg_server.port}/{database}" in message
    bare = f"postgresql://fcw@127.0.0.1:{pg_server.port}/{database}"
    store = await open_postgres(bare, password=pg_server.password)
    assert repr(store) == f"PostgresStore('{bare}')"
    await store.close()
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:{database}:fcw:{pg_server.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    store = await open_postgres(bare)
    assert await store.outbox_counts() == {}
    await store.close()
    with pytest.raises(StateStoreError, match="cannot reach PostgreSQL") as down:
        await open_postgres(f"postgresql://fcw:s3cret-x@127.0.0.1:1/{database}")
    assert "s3cret-x" not in str(down.value) and down.value.kind is CONNECTION_LOST


async def test_dropped_connections_are_replaced_without_a_failed_write(
    pg_url: str, pg_server: PgServer
) -> None:
    """Every connection of the store terminated by the server (a failover, an idle timeout):
    the next read and write reconnect, and write health stays ok."""
    store = await open_postgres(pg_url)
    try:
        await _commit(store, _failed())
        database = pg_url.rsplit("/", 1)[1]
        terminated = pg_server.psql(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
            f"WHERE datname = '{database}' AND usename = 'fcw'"
        )
        assert int(terminated) >= 1
        ref = _ref("after")
        assert await _commit(store, _seen(ref, "Failed", 2000), ref=ref)
        assert len(await store.load_snapshots()) == 2
        assert store.write_health().ok
    finally:
        await store.close()


async def test_concurrent_commits_keep_the_counts_exact(pg_url: str) -> None:
    """Fifty polls committed at once on the pool, to two sinks, then sent and dead-lettered at
    once: no deadlock, no lost count; the kept counts equal a scan of the table."""
    store = await open_postgres(pg_url, pool_size=8)
    try:
        refs = [_ref(f"c-{n}") for n in range(50)]
        await asyncio.gather(
            *(_commit(store, _seen(r, "Failed", 1000), SINKS, ref=r) for r in refs)
        )
        rows = await store.pending("hook", 1000)
        sent, dead = rows[::2], rows[1::2]
        await asyncio.gather(
            *(store.mark_sent([r.seq], 2000) for r in sent),
            *(store.mark_dead([r.seq], 2000, "x") for r in dead),
        )
        counts = await store.outbox_counts()
        assert counts == {"pending": 100, "sent": 50, "dead": 50}
        conn = await asyncpg.connect(pg_url)
        by_state = await conn.fetch("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        scanned = {str(state): int(count) for state, count in by_state}
        await conn.close()
        assert scanned == counts
    finally:
        await store.close()


async def test_text_postgresql_refuses_is_kept_as_replacement(pg_url: str) -> None:
    """A NUL in an FC error message (SQLite keeps it, PostgreSQL TEXT refuses it) is stored as
    U+FFFD rather than failing the commit forever."""
    store = await open_postgres(pg_url)
    try:
        body = {"status": "Failed", "invocationErrorMessage": "bad\x00byte"}
        result = decide.diff(None, Invocation.model_validate(body), ref=REF, observed_ms=1000)
        assert await _commit(store, result)
        (snapshot,) = (await store.load_snapshots()).values()
        assert snapshot.error_message == "bad\ufffdbyte"
        (transition,) = await store.transitions()
        assert transition == result.transitions[0]  # the payload keeps it, escaped in JSON
    finally:
        await store.close()
