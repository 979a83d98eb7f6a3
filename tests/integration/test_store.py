"""The SQLite state store: atomic commits, idempotent ids, migrations, and hostile DB files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.route import Target
from watcher.daemon.status import render_status
from watcher.store.errors import StateStoreError
from watcher.store.records import SinkHealthRecord
from watcher.store.sqlite import SCHEMA_VERSION, SqliteStore
from watcher.store.sqlite.schema import _MIGRATIONS

REF = InvocationRef(FunctionRef(Api.FC2, "fn", "svc", "LATEST"), "job-1")


def _failed_result() -> decide.DiffResult:
    body = {
        "status": "Failed",
        "alreadyRetriedTimes": 1,
        "events": [{"eventId": 1, "status": "Failed"}],
    }
    return decide.diff(None, Invocation.model_validate(body), ref=REF, observed_ms=1000)


async def _commit(
    store: SqliteStore, result: decide.DiffResult, sinks: tuple[str, ...] = ("log",)
) -> list[str]:
    fresh = await store.commit(
        REF,
        result.snapshot,
        transitions=result.transitions,
        routes={t.id: [Target(sink) for sink in sinks] for t in result.transitions},
        now_ms=1000,
    )
    return [t.id for t in fresh]


async def test_commit_persists_snapshot_transitions_and_outbox(tmp_path: Path) -> None:
    """One commit writes all three; reopening reads them back."""
    result = _failed_result()
    store = await SqliteStore.open(tmp_path / "state.db")
    assert await _commit(store, result, ("log", "hook")) == [t.id for t in result.transitions]
    await store.close()
    store = await SqliteStore.open(tmp_path / "state.db")
    assert await store.load_snapshots() == {REF.key: result.snapshot}
    assert [t.id for t in await store.transitions()] == [t.id for t in result.transitions]
    assert await store.outbox_counts() == {"pending": 2 * len(result.transitions)}
    pending = await store.pending("hook", 10)
    assert [row.transition_id for row in pending] == [t.id for t in result.transitions]
    loaded = await store.load_transitions([row.transition_id for row in pending])
    assert [loaded[row.transition_id] for row in pending] == list(result.transitions)
    await store.close()


async def test_recommitting_the_same_ids_adds_nothing(tmp_path: Path) -> None:
    """A re-derived transition (after a crash) is not inserted or queued twice."""
    store = await SqliteStore.open(tmp_path / "state.db")
    result = _failed_result()
    await _commit(store, result)
    assert await _commit(store, result) == []
    assert len(await store.transitions()) == len(result.transitions)
    assert await store.outbox_counts() == {"pending": len(result.transitions)}
    await store.close()


async def test_outbox_state_changes(tmp_path: Path) -> None:
    """Rows move to sent, retry (with attempts counted) or dead, and leave the pending list."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await _commit(store, _failed_result())
    first, second = await store.pending("log", 10)
    await store.mark_retry([first.seq], 5000, "HTTP 500")
    await store.mark_sent([second.seq], 6000)
    (again,) = await store.pending("log", 10)
    assert (again.seq, again.attempts, again.next_attempt_ms) == (first.seq, 1, 5000)
    await store.mark_dead([first.seq], 7000, "gone")
    assert await store.pending("log", 10) == []
    assert await store.outbox_counts() == {"sent": 1, "dead": 1}
    await store.close()


async def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    """Two daemons on one state DB: the second gets one line naming the file."""
    first = await SqliteStore.open(tmp_path / "state.db")
    with pytest.raises(StateStoreError, match="in use by another fc-watcher"):
        await SqliteStore.open(tmp_path / "state.db")
    readonly = await SqliteStore.open(tmp_path / "state.db", readonly=True)  # status still works
    await readonly.close()
    await first.close()
    await (await SqliteStore.open(tmp_path / "state.db")).close()


async def test_a_locked_database_is_one_clear_error(tmp_path: Path) -> None:
    """A DB held in an exclusive transaction by another process reports 'locked', and is kept."""
    path = tmp_path / "state.db"
    await (await SqliteStore.open(path)).close()
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    try:
        store = await SqliteStore.open(path, busy_timeout_s=0.1)
        with pytest.raises(StateStoreError, match="locked"):
            await _commit(store, _failed_result())
        await store.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    store = await SqliteStore.open(path)
    assert await _commit(store, _failed_result())  # nothing was lost or half-written
    await store.close()


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"\x00" * 4096])
async def test_a_file_that_is_not_a_database_is_kept_and_explained(
    tmp_path: Path, content: bytes
) -> None:
    """A garbage state file is never overwritten; the error says to move it aside."""
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StateStoreError, match="move it aside") as caught:
        await SqliteStore.open(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content


async def test_unwritable_directory(tmp_path: Path) -> None:
    """A state path in a missing directory is one line naming it."""
    with pytest.raises(StateStoreError, match="exists"):
        await SqliteStore.open(tmp_path / "missing" / "state.db")


async def test_migrates_an_empty_v0_database_and_refuses_a_newer_one(tmp_path: Path) -> None:
    """A DB at version 0 is migrated; one from a newer fc-watcher is refused, untouched."""
    path = tmp_path / "state.db"
    sqlite3.connect(path).close()
    await (await SqliteStore.open(path)).close()
    migrated = sqlite3.connect(path)
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    migrated.close()
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(StateStoreError, match="newer than this"):
        await SqliteStore.open(path)


async def test_status_reads_without_writing(tmp_path: Path) -> None:
    """`status` renders from a read-only connection, as a table and as JSON."""
    path = tmp_path / "state.db"
    store = await SqliteStore.open(path)
    await _commit(store, _failed_result())
    await store.close()
    table = await render_status(path, as_json=False, now_ms=61_000)
    assert "svc/fn/job-1" in table
    assert "Failed" in table
    assert "1m00s ago" in table
    assert "outbox: 2 pending, 0 sent, 0 dead" in table
    assert '"status": "Failed"' in await render_status(path, as_json=True)
    with pytest.raises(StateStoreError, match="does not exist"):
        await render_status(tmp_path / "nope.db", as_json=False)


async def test_own_failures_are_counted_apart_from_attempts(tmp_path: Path) -> None:
    """A failure the sink's outage caused counts as an attempt, not as the row's own failure;
    redeliver starts both afresh; a sink's circuit round-trips, one row per sink."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await _commit(store, _failed_result(), ("hook",))
    first, _ = await store.pending("hook", 10)
    await store.mark_retry([first.seq], 5000, "HTTP 500")
    await store.mark_retry([first.seq], 6000, "cannot reach", own_failure=False)
    again, _ = await store.pending("hook", 10)
    assert (again.attempts, again.row_failures, again.next_attempt_ms) == (2, 1, 6000)
    assert await store.pending_count("hook") == 2
    await store.mark_dead([first.seq], 7000, "gone")
    assert await store.redeliver(sink="hook", transition_id=None, now_ms=8000) == 1
    redelivered, _ = await store.pending("hook", 10)
    assert (redelivered.attempts, redelivered.row_failures) == (0, 0)
    down = SinkHealthRecord("hook", False, 100, 90, "HTTP 503")
    await store.save_sink_health(down)
    assert await store.sink_health() == [down]
    up = SinkHealthRecord("hook", True, 200, 200, "HTTP 503")
    await store.save_sink_health(up)
    assert await store.sink_health() == [up]
    await store.close()


async def test_migrates_a_version_4_outbox_keeping_its_rows(tmp_path: Path) -> None:
    """Rows queued before sink health (version 4) keep their attempts and start with no own
    failures; the sink health table starts empty."""
    path = tmp_path / "state.db"
    old = sqlite3.connect(path, isolation_level=None)
    for steps in _MIGRATIONS[:4]:
        for statement in steps:
            old.execute(statement)
    old.execute("PRAGMA user_version = 4")
    old.execute(
        "INSERT INTO outbox (transition_id, invocation_key, sink, attempts, created_ms) "
        "VALUES ('tr_1', 'k', 'hook', 5, 1)"
    )
    old.close()
    store = await SqliteStore.open(path)
    (row,) = await store.pending("hook", 10)
    assert (row.attempts, row.row_failures) == (5, 0)
    assert await store.sink_health() == []
    await store.close()
