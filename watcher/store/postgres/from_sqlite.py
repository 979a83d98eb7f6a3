"""Copy a single host's SQLite state into PostgreSQL (``fc-watcher migrate-state``).

Everything a daemon resumes from is copied: snapshots, the transition log, the outbox (pending,
sent and dead-lettered rows, with their attempts and errors), live ids, discover watermarks,
sink health and silences. The daemon's own info is not: the next daemon writes its own.

One PostgreSQL transaction, so a failed copy leaves nothing half-done, and every row goes in
with ``ON CONFLICT DO NOTHING`` on its natural key, so a second run copies nothing and says so.
The SQLite file is read in one read transaction, a page at a time, while holding its lock, so
no daemon can write to it meanwhile (one running is refused: what it wrote after the copy would
be lost). Transitions and outbox rows are copied in their commit order and numbered anew, so
each invocation's rows still go out in order. Copied live ids and silences are stamped with one
new revision, above every revision either side has handed out, so a daemon already running on
PostgreSQL hears of them too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.store.errors import FailureKind, StateStoreError
from watcher.store.postgres.pool import Database
from watcher.store.postgres.writes import clean
from watcher.store.rows import SNAPSHOT_FIELDS
from watcher.store.sqlite.connection import connect, explain, take_lock

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class _Table:
    label: str
    name: str
    columns: tuple[str, ...]
    conflict: str
    order: str


_IDENTITY = ("key", "api", "service", "function", "qualifier", "invocation_id")
TABLES = (
    _Table(
        "invocations", "invocations",
        (*_IDENTITY, *SNAPSHOT_FIELDS, "last_polled_ms"), "key", "key",
    ),
    _Table(
        "transitions", "transitions",
        ("id", "invocation_key", "type", "observed_ms", "data", "silenced_by"), "id", "seq",
    ),
    _Table(
        "outbox", "outbox",
        ("transition_id", "invocation_key", "sink", "state", "attempts", "row_failures",
         "next_attempt_ms", "last_error", "created_ms", "done_ms", "severity", "template"),
        "transition_id, sink", "seq",
    ),
    _Table(
        "live ids", "live",
        (*_IDENTITY, "labels", "added_ms", "changed_ms", "rev", "removed"), "key", "key",
    ),
    _Table("watermarks", "watermarks", ("entry", "started_ms", "updated_ms"), "entry", "entry"),
    _Table(
        "sink health", "sink_health",
        ("sink", "healthy", "since_ms", "last_success_ms", "last_error"), "sink", "sink",
    ),
    _Table(
        "silences", "silences",
        ("id", "matchers", "starts_ms", "ends_ms", "comment", "author", "created_ms",
         "expired_ms", "rev"), "id", "id",
    ),
)  # fmt: skip
_REVISIONED = frozenset({"live", "silences"})


@dataclass
class CopyReport:
    """What one run read and how much of it was new to PostgreSQL, table by table."""

    source: Path
    target: str
    read: dict[str, int] = field(default_factory=dict)
    new: dict[str, int] = field(default_factory=dict)
    new_outbox: dict[str, int] = field(default_factory=dict)
    """New outbox rows by state (pending, sent, dead)."""

    @property
    def total_new(self) -> int:
        return sum(self.new.values())


async def _insert_sql(conn: Conn, table: _Table) -> str:
    """One INSERT of a page of rows as arrays, typed as the PostgreSQL columns are;
    RETURNING what a new row is (an outbox row's state, else 1)."""
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table.name,
    )
    types = {str(name): str(kind) for name, kind in rows}
    arrays = ", ".join(f"${n}::{types[c]}[]" for n, c in enumerate(table.columns, 1))
    names = ", ".join(table.columns)
    values = ", ".join(
        f"${len(table.columns) + 1}" if table.name in _REVISIONED and c == "rev" else f"r.{c}"
        for c in table.columns
    )
    returning = "state" if table.name == "outbox" else "1"
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {values} FROM unnest({arrays}) "  # noqa: S608
        f"WITH ORDINALITY AS r ({names}, n) ORDER BY r.n "
        f"ON CONFLICT ({table.conflict}) DO NOTHING RETURNING {returning}"
    )


def _value(column: str, value: Any) -> Any:
    if column in ("not_found_reported", "failing", "healthy", "removed"):
        return bool(value)  # SQLite's 0 and 1
    return clean(value) if isinstance(value, str) else value


def _pages(db: sqlite3.Connection, table: _Table) -> Iterator[list[tuple[Any, ...]]]:
    cursor = db.execute(
        f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}"  # noqa: S608
    )
    while rows := cursor.fetchmany(_PAGE):
        yield [tuple(_value(c, v) for c, v in zip(table.columns, row, strict=True)) for row in rows]


async def _revision(conn: Conn, db: sqlite3.Connection) -> int:
    """The revision for every copied live id and silence: above both sides' counters. The
    counter's row stays locked to the commit; it is moved only if one of them was new."""
    theirs = int(db.execute("SELECT rev FROM live_revision").fetchone()[0])
    ours = await conn.fetchval("SELECT rev FROM live_revision FOR UPDATE")
    return max(int(ours), theirs) + 1


async def _copy(conn: Conn, db: sqlite3.Connection, report: CopyReport) -> None:
    rev = await _revision(conn, db)
    for table in TABLES:
        sql, read, new = await _insert_sql(conn, table), 0, 0
        for page in _pages(db, table):
            arrays: list[Any] = [list(column) for column in zip(*page, strict=True)]
            if table.name in _REVISIONED:
                arrays.append(rev)
            returned = await conn.fetch(sql, *arrays)
            read, new = read + len(page), new + len(returned)
            if table.name == "outbox":
                for row in returned:
                    report.new_outbox[row[0]] = report.new_outbox.get(row[0], 0) + 1
        report.read[table.label], report.new[table.label] = read, new
    if report.new["live ids"] or report.new["silences"]:
        await conn.execute("UPDATE live_revision SET rev = $1", rev)


async def copy_from_sqlite(source: Path, url: str, *, password: str | None = None) -> CopyReport:
    """Copy the SQLite state at ``source`` into the PostgreSQL database at ``url`` (migrated
    first if new); raises ``StateStoreError`` in one line, having copied nothing."""
    if not source.is_file():  # noqa: ASYNC240 (one stat, before anything runs)
        raise StateStoreError(f"state DB {source} does not exist; give --from the SQLite file")
    try:
        lock = take_lock(source)
    except StateStoreError as exc:
        if exc.kind is not FailureKind.LOCKED:
            raise
        raise StateStoreError(
            f"state DB {source} is in use by a running fc-watcher; stop it first, or what it "
            "writes after the copy would be lost",
            FailureKind.LOCKED,
        ) from None
    try:
        return await _copy_locked(source, url, password)
    finally:
        lock.close()


async def _copy_locked(source: Path, url: str, password: str | None) -> CopyReport:
    database = await Database.open(url, password=password)
    try:
        db = connect(source, readonly=True, busy_timeout_s=5.0)
        try:
            report = CopyReport(source, database.target)
            db.execute("BEGIN")  # one read snapshot for every table
            await database.write(lambda conn: _copy(conn, db, report))
            return report
        except sqlite3.Error as exc:
            raise explain(source, exc) from None
        finally:
            db.close()
    finally:
        await database.close()
