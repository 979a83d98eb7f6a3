"""The SQLite state store: atomic commits, idempotent ids, migrations, hostile DB files, the
checks at open (corrupt, read-only) and the write health that readiness reports."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.route import Target
from watcher.daemon.status import render_status
from watcher.store.errors import FailureKind, StateStoreError
from watcher.store.records import LiveItem
from watcher.store.sqlite import SCHEMA_VERSION, SqliteStore, status_reads
from watcher.store.sqlite.connection import explain, write_transaction
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


class StepClock:
    """The store's clock, moved by the test: no sleeping."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def monotonic(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return int(self.now_s * 1000)


async def _filled(path: Path, invocations: int = 60) -> None:
    """A real state DB whose transition log spans many pages."""
    store = await SqliteStore.open(path)
    for n in range(invocations):
        ref = InvocationRef(FunctionRef(Api.FC2, "fn", "svc", "LATEST"), f"job-{n:03d}")
        body = {"status": "Failed", "errorMessage": "E" * 200, "events": [{"eventId": 1}]}
        result = decide.diff(None, Invocation.model_validate(body), ref=ref, observed_ms=1000)
        routes = {t.id: [Target("log")] for t in result.transitions}
        await store.commit(
            ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=1000
        )
    await store.close()


async def test_a_db_with_corrupt_pages_is_refused_at_open_and_kept(tmp_path: Path) -> None:
    """Garbage over the transition log's pages: the daemon's open says corrupt, where, and to
    move it aside with its WAL, in one line; the file is untouched; ``status`` still reads."""
    path = tmp_path / "state.db"
    await _filled(path)
    db = sqlite3.connect(path)
    size = int(db.execute("PRAGMA page_size").fetchone()[0])
    pages = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = 'transitions'")]
    db.close()
    with path.open("r+b") as file:
        for page in pages:
            file.seek((page - 1) * size)
            file.write(bytes(range(256)) * (size // 256))
    corrupt = path.read_bytes()
    with pytest.raises(StateStoreError, match=r"move it aside with its state\.db-wal") as caught:
        await SqliteStore.open(path)
    assert caught.value.kind is FailureKind.CORRUPT
    assert "is not a usable SQLite database: corrupt" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == corrupt
    reader = await SqliteStore.open(path, readonly=True)  # no check: status shows what it can
    assert len(await reader.invocation_rows()) == 60
    await reader.close()


async def test_the_integrity_check_is_bounded(tmp_path: Path) -> None:
    """A check cut short by its budget (0 s here) lets the start go on, and says so."""
    path = tmp_path / "state.db"
    await _filled(path)
    with capture_logs() as logs:
        store = await SqliteStore.open(path, check_budget_s=0)
    await store.close()
    assert [e["event"] for e in logs] == ["state_check_incomplete"]


async def test_a_read_only_file_or_directory_is_refused_at_open(tmp_path: Path) -> None:
    """An immutable state DB (which root cannot write either), then an immutable directory:
    each is one line saying read-only, before anything else happens."""
    from tests.integration.test_state_health import Immutable

    directory = tmp_path / "state"
    directory.mkdir()
    path = directory / "state.db"
    await _filled(path, 1)
    with Immutable(path), pytest.raises(StateStoreError, match="is read-only") as file_error:
        await SqliteStore.open(path)
    with Immutable(directory), pytest.raises(StateStoreError, match="read-only") as dir_error:
        await SqliteStore.open(path)
    assert file_error.value.kind is dir_error.value.kind is FailureKind.READ_ONLY
    assert str(directory) in str(dir_error.value)
    await (await SqliteStore.open(path)).close()  # lifted: it opens


def test_a_full_database_says_disk_full_even_when_rollback_fails(tmp_path: Path) -> None:
    """SQLITE_FULL (a page limit: a real one, without filling a disk), with a ROLLBACK that
    fails as a full disk can make it: the error is the first one, "disk full"; ENOSPC too."""

    class RollbackFails(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == "ROLLBACK":
                raise sqlite3.OperationalError("cannot rollback - no transaction is active")
            return super().execute(sql, *args)

    path = tmp_path / "full.db"
    db = sqlite3.connect(path, isolation_level=None, factory=RollbackFails)
    db.execute("CREATE TABLE t (x)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StateStoreError, match="disk full") as caught:
        write_transaction(db, path, lambda: db.execute("INSERT INTO t VALUES (zeroblob(9000))"))
    db.close()
    assert caught.value.kind is FailureKind.DISK_FULL
    assert "cannot rollback" not in str(caught.value)
    enospc = explain(path, OSError(errno.ENOSPC, "No space left on device"))
    assert (enospc.kind, "disk full" in str(enospc)) == (FailureKind.DISK_FULL, True)


# -- live ids and discover watermarks (TrackingStore) -----------------------------------------

FC3 = FunctionRef(Api.FC3, "transcode")
FN_FC2 = FunctionRef(Api.FC2, "fn", "svc", "LATEST")


def _live(*ids: str, fn: FunctionRef = FC3, **labels: str) -> list[LiveItem]:
    return [LiveItem(InvocationRef(fn, i), labels) for i in ids]


async def test_live_changes_are_read_by_index_and_seen_across_processes(tmp_path: Path) -> None:
    """A registration written beside the daemon (``fc-watcher track``'s open) reaches the
    daemon's store through ``live_changes``, which looks the revision up by index."""
    path = tmp_path / "state.db"
    daemon = await SqliteStore.open(path)
    rev, _ = await daemon.live_changes(0)
    beside = await SqliteStore.open(path, beside_daemon=True)
    assert await beside.track_live(_live("t-9"), now_ms=1000) == 1
    await beside.close()
    after, changes = await daemon.live_changes(rev)
    assert [c.ref.invocation_id for c in changes] == ["t-9"]
    assert after > rev
    await daemon.close()
    db = sqlite3.connect(path)
    plan = " ".join(
        str(row[-1])
        for row in db.execute("EXPLAIN QUERY PLAN SELECT * FROM live WHERE rev > 5 ORDER BY rev")
    )
    db.close()
    assert "live_by_rev" in plan


async def test_status_reads_the_live_keys(tmp_path: Path) -> None:
    """``status`` can count live ids as tracked: the keys still registered, read-only."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await store.track_live(_live("t-1", "t-2"), now_ms=1000)
    await store.untrack_live([InvocationRef(FC3, "t-2")], now_ms=1000)
    await store.close()
    with status_reads.open_readonly(tmp_path / "state.db") as db:
        assert status_reads.live_keys(db) == {"fc3//transcode//t-1"}
