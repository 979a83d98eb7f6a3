"""Retention on a real SQLite store: what is old and finished goes, what may still alert stays."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.integration.daemon import wait_until
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.route import Target
from watcher.store.records import Pruned, SinkBacklog
from watcher.store.retention import prune_once, run_retention
from watcher.store.sqlite import SqliteStore

NOW_MS = 1_795_680_000_000
DAY_MS = 86_400_000
RETENTION_DAYS = 30
OLD_MS = NOW_MS - 40 * DAY_MS
RECENT_MS = NOW_MS - 1 * DAY_MS
SINKS = ("log", "hook")
FN = FunctionRef(Api.FC2, "fn", "svc", "LATEST")


StoreFactory = Callable[..., Awaitable[SqliteStore]]


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Open ``tmp_path/state.db``; every store opened is closed after the test, failed or not."""
    opened: list[SqliteStore] = []

    async def open_(**options: Any) -> SqliteStore:
        store = await SqliteStore.open(tmp_path / "state.db", **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


def _ref(invocation_id: str) -> InvocationRef:
    return InvocationRef(FN, invocation_id)


def _seen(ref: InvocationRef, status: str, observed_ms: int) -> decide.DiffResult:
    """A first sighting in ``status`` with one event: a status change and an event."""
    body = {"status": status, "events": [{"eventId": 1, "status": status}]}
    return decide.diff(None, Invocation.model_validate(body), ref=ref, observed_ms=observed_ms)


def _gone(ref: InvocationRef, observed_ms: int) -> decide.DiffResult:
    """Never seen, and reported as not found: one transition."""
    return decide.not_found(None, ref=ref, observed_ms=observed_ms, report_after=1)


async def _commit(store: SqliteStore, ref: InvocationRef, result: decide.DiffResult) -> None:
    routes = {t.id: [Target(sink) for sink in SINKS] for t in result.transitions}
    fresh = await store.commit(
        ref,
        result.snapshot,
        transitions=result.transitions,
        routes=routes,
        now_ms=result.snapshot.changed_ms,
    )
    assert len(fresh) == len(result.transitions)


async def _settle(
    store: SqliteStore, key: str, *, pending: str | None = None, dead: str | None = None
) -> None:
    """Mark every outbox row of ``key`` sent, except the first row of sink ``pending`` (left
    pending) and the first row of sink ``dead`` (dead-lettered)."""
    for sink in SINKS:
        rows = [row for row in await store.pending(sink, 1000) if row.invocation_key == key]
        assert rows, f"no pending rows of {key} for {sink}"
        if sink == pending:
            rows = rows[1:]
        if sink == dead:
            await store.mark_dead([rows[0].seq], NOW_MS, "gave up")
            rows = rows[1:]
        await store.mark_sent([row.seq for row in rows], NOW_MS)


def _table_counts(path: Path) -> dict[str, int]:
    """Outbox rows by state, counted by scanning the table (not the trigger-kept counts)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}
    finally:
        db.close()


def _history_of(path: Path, keys: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(transitions, outbox rows) per key, counted in the DB itself."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = {}
        for key in keys:
            logged = db.execute("SELECT COUNT(*) FROM transitions WHERE invocation_key = ?", (key,))
            queued = db.execute("SELECT COUNT(*) FROM outbox WHERE invocation_key = ?", (key,))
            result[key] = (int(logged.fetchone()[0]), int(queued.fetchone()[0]))
        return result
    finally:
        db.close()


async def _prunable(store: SqliteStore, names: Iterable[str]) -> dict[str, decide.DiffResult]:
    """Old Succeeded invocations with every row sent: each one is prunable."""
    results = {}
    for name in names:
        ref = _ref(name)
        results[ref.key] = _seen(ref, "Succeeded", OLD_MS)
        await _commit(store, ref, results[ref.key])
        await _settle(store, ref.key)
    return results


class FixedClock:
    """Wall time that stays at ``wall``: the cutoff is then exact."""

    def __init__(self, wall: int = NOW_MS) -> None:
        self.wall = wall

    def monotonic(self) -> float:
        return 0.0

    def wall_ms(self) -> int:
        return self.wall


class CountingPrunable:
    """The real store, with every batch's result recorded."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.batches: list[Pruned] = []

    async def prune(
        self,
        *,
        changed_before_ms: int,
        protected_keys: Collection[str],
        after_key: str | None,
        batch: int,
    ) -> Pruned:
        result = await self.store.prune(
            changed_before_ms=changed_before_ms,
            protected_keys=protected_keys,
            after_key=after_key,
            batch=batch,
        )
        self.batches.append(result)
        return result


async def test_prunes_old_finished_and_keeps_pending_dead_recent_running_and_tracked(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    """Only old finished invocations with every row sent lose their history; a tracked one keeps
    its snapshot; the trigger-kept counts match the table afterwards."""
    path = tmp_path / "state.db"
    store = await open_store()
    cases = {
        "old-done": _seen(_ref("old-done"), "Succeeded", OLD_MS),
        "old-pending": _seen(_ref("old-pending"), "Failed", OLD_MS),
        "old-dead": _seen(_ref("old-dead"), "Failed", OLD_MS),
        "recent-done": _seen(_ref("recent-done"), "Succeeded", RECENT_MS),
        "old-running": _seen(_ref("old-running"), "Running", OLD_MS),
        "old-tracked": _seen(_ref("old-tracked"), "Stopped", OLD_MS),
        "old-gone": _gone(_ref("old-gone"), OLD_MS),
    }
    keys = {name: _ref(name).key for name in cases}
    for name, result in cases.items():
        await _commit(store, _ref(name), result)
        await _settle(
            store,
            keys[name],
            pending="hook" if name == "old-pending" else None,
            dead="hook" if name == "old-dead" else None,
        )
    before = await store.transitions()
    assert await store.outbox_counts() == {"sent": 24, "pending": 1, "dead": 1}
    dead_before = await store.dead_letters()

    pruned = await prune_once(
        store,
        retention_days=RETENTION_DAYS,
        protected_keys={keys["old-tracked"]},
        clock=FixedClock(),
    )

    assert pruned == 2  # old-done and old-gone; old-tracked's snapshot stays
    kept = {"old-pending", "old-dead", "recent-done", "old-running", "old-tracked"}
    snapshots = await store.load_snapshots()
    assert snapshots == {keys[name]: cases[name].snapshot for name in kept}
    history = _history_of(path, keys.values())
    assert history[keys["old-done"]] == (0, 0)
    assert history[keys["old-gone"]] == (0, 0)
    assert history[keys["old-tracked"]] == (0, 0)
    for name in kept - {"old-tracked"}:
        assert history[keys[name]] == (2, 4), name
    with_history = {keys[name] for name in kept - {"old-tracked"}}
    assert [t.id for t in await store.transitions()] == [
        t.id for t in before if t.ref.key in with_history
    ]
    # 10 sent rows went: 4 of old-done, 4 of old-tracked, 2 of old-gone.
    assert await store.outbox_counts() == {"sent": 14, "pending": 1, "dead": 1}
    assert await store.outbox_counts() == _table_counts(path)
    assert await store.dead_letters() == dead_before
    assert [d.invocation_key for d in dead_before] == [keys["old-dead"]]
    (pending_row,) = await store.pending("hook", 100)
    assert pending_row.invocation_key == keys["old-pending"]
    expected_backlog = [SinkBacklog("hook", 1, 1, OLD_MS), SinkBacklog("log", 0, 0, 0)]
    assert list(store.cached_backlog()) == expected_backlog
    assert await store.outbox_by_sink() == expected_backlog

    # A second pass finds nothing new; once no longer tracked, old-tracked's snapshot goes too.
    assert (
        await prune_once(
            store,
            retention_days=RETENTION_DAYS,
            protected_keys={keys["old-tracked"]},
            clock=FixedClock(),
        )
        == 0
    )
    assert (
        await prune_once(
            store, retention_days=RETENTION_DAYS, protected_keys=(), clock=FixedClock()
        )
        == 1
    )
    assert set(await store.load_snapshots()) == {keys[name] for name in kept - {"old-tracked"}}
    assert await store.outbox_counts() == {"sent": 14, "pending": 1, "dead": 1}


async def test_prunes_in_batches_until_done(open_store: StoreFactory, tmp_path: Path) -> None:
    """Batches of 2 over 5 prunable and 2 protected invocations: every prunable one goes, the
    pages move on past protected keys, and the last page says the scan is complete."""
    path = tmp_path / "state.db"
    store = await open_store()
    results = await _prunable(store, [f"job-{n}" for n in range(7)])
    protected = {_ref("job-1").key, _ref("job-4").key}
    counting = CountingPrunable(store)

    pruned = await prune_once(
        counting,
        retention_days=RETENTION_DAYS,
        protected_keys=protected,
        clock=FixedClock(),
        batch=2,
    )

    assert pruned == 5
    # 7 candidates in pages of 2: 2, 2, 2, 1 (the last page short, so the scan ends there).
    assert [b.next_after_key is None for b in counting.batches] == [False, False, False, True]
    assert sum(b.invocations for b in counting.batches) == 5
    assert sum(b.transitions for b in counting.batches) == 7 * 2
    assert sum(b.outbox_rows for b in counting.batches) == 7 * 2 * len(SINKS)
    assert await store.load_snapshots() == {key: results[key].snapshot for key in protected}
    assert await store.transitions() == []
    assert await store.outbox_counts() == {}
    assert _table_counts(path) == {}
    assert list(store.cached_backlog()) == []


async def test_run_retention_logs_each_pass_and_stops_when_told(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    """The loop prunes at start and on every period, logs ``state_pruned`` with the counts,
    survives a locked database, and returns as soon as ``stop`` is set, mid-wait."""
    path = tmp_path / "state.db"
    store = await open_store(busy_timeout_s=0.1)

    def logged(event: str) -> list[MutableMapping[str, Any]]:
        return [e for e in logs if e["event"] == event]

    async def start(every_s: float) -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_retention(
                store,
                retention_days=RETENTION_DAYS,
                protected_keys=lambda: (),
                clock=FixedClock(),
                stop=stop,
                every_s=every_s,
            )
        )
        return stop, task

    await _prunable(store, ["first-1", "first-2"])
    with capture_logs() as logs:
        stop, task = await start(every_s=0.05)
        try:
            await wait_until(lambda: len(logged("state_pruned")) == 1, "the pass at start")
            assert await store.load_snapshots() == {}

            # Another connection holds the DB: a pass fails, is logged, and the loop goes on.
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                await wait_until(lambda: bool(logged("state_prune_failed")), "a failed pass")
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert not task.done()

            await _prunable(store, ["second-1"])
            await wait_until(lambda: len(logged("state_pruned")) == 2, "a later pass")
            assert await store.load_snapshots() == {}
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)

        # An hourly loop, stopped while it waits for its next pass, returns at once.
        await _prunable(store, ["third-1"])
        stop, task = await start(every_s=3600)
        try:
            await wait_until(lambda: len(logged("state_pruned")) == 3, "the hourly pass at start")
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)

    passes = logged("state_pruned")
    counts = [(e["invocations"], e["transitions"], e["outbox_rows"]) for e in passes]
    assert counts == [(2, 4, 8), (1, 2, 4), (1, 2, 4)]
    assert "locked" in logged("state_prune_failed")[0]["error"]
