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
from watcher.store.records import Pruned
from watcher.store.retention import run_retention
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
