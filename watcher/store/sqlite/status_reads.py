"""The reads behind ``fc-watcher status``, as functions of a read-only connection.

``status`` runs beside the daemon on state DBs of 100,000s of invocations, so nothing here
reads them all at once. ``invocations`` pages by key (keyset paging): each page is its own
short read, so a slow reader (status piped into ``less``) never holds a read transaction open,
which would keep the daemon's WAL from being checkpointed; and the caller writes each page out
before the next is read, so memory stays at one page whatever the table's size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.core.route import FAILURE_STATUSES
from watcher.store.errors import StateStoreError
from watcher.store.records import InvocationRow
from watcher.store.rows import invocation_row
from watcher.store.sqlite import reads
from watcher.store.sqlite.connection import connect, explain

PAGE_ROWS = 1000

# What ``status`` lists first: a bad ending (a user's Stopped included, as the default alert
# routes count it), stuck, reported not found, or failing to poll. The statuses are our own
# constants, so inlining them is safe.
_BAD = ", ".join(f"'{status}'" for status in sorted(FAILURE_STATUSES))
PROBLEM = f"(status IN ({_BAD}) OR stuck_reported > 0 OR not_found_reported != 0 OR failing != 0)"
# The status cell's length as ``status`` renders it: the status, " (stuck)", " (poll failing)".
_STATUS_CELL = (
    "LENGTH(COALESCE(status, 'not found')) + 8 * (stuck_reported > 0) + 15 * (failing != 0)"
)
_NAME = "COALESCE(NULLIF(service, '') || '/', '') || function || '/' || invocation_id"
# Whether its latest transition (events aside: they follow the status change they belong to)
# was silenced: one seek of the (invocation_key, seq) index per row, asked only when the state
# has silences at all.
_SILENCED_BY = (
    "(SELECT silenced_by FROM transitions t WHERE t.invocation_key = invocations.key "
    "AND t.type != 'invocation.event' ORDER BY t.seq DESC LIMIT 1) AS silenced_by"
)


@contextmanager
def open_readonly(path: Path, *, busy_timeout_s: float = 5.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the state DB at ``path`` for one command, closed after the
    block; a sqlite3 error inside the block leaves it as one clear ``StateStoreError``.

    ``status`` opens this rather than a ``SqliteStore``: it is a one-shot command on one
    thread that streams pages out of a generator, which the store's one-hop-per-call coroutines
    cannot feed; and it never writes, so it needs neither the daemon's lock nor its executor.
    """
    if not path.exists():
        raise StateStoreError(f"state DB {path} does not exist yet; run the watcher first")
    db = connect(path, readonly=True, busy_timeout_s=busy_timeout_s)
    try:
        yield db
    except sqlite3.Error as exc:
        raise explain(path, exc) from None
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class StatusTotals:
    """One scan's worth of aggregates: how many rows, how many problems, and the widest
    cells, so that a table streamed row by row is still aligned."""

    invocations: int
    problems: int
    name_width: int
    status_width: int
    """The widest status cell as ``status`` renders it, but for " (not tracked)"."""
    last_event_width: int


def totals(db: sqlite3.Connection) -> StatusTotals:
    """Counts and the widest cells of the invocations table."""
    row = db.execute(
        f"SELECT COUNT(*), TOTAL({PROBLEM}), MAX(LENGTH({_NAME})), "  # noqa: S608 (ours)
        f"MAX({_STATUS_CELL}), MAX(LENGTH(last_event_status)) FROM invocations"
    ).fetchone()
    return StatusTotals(
        int(row[0]), int(row[1]), int(row[2] or 0), int(row[3] or 0), int(row[4] or 0)
    )


def daemon_info(db: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """What the running daemon last said of itself: value and when, by key."""
    rows = db.execute("SELECT key, value, updated_ms FROM daemon_info")
    return {row[0]: (row[1], row[2]) for row in rows}


def live_keys(db: sqlite3.Connection) -> frozenset[str]:
    """The keys registered live (``fc-watcher track``, the HTTP API) and not untracked: a
    running watcher polls these too, though the config does not list them."""
    return frozenset(row[0] for row in db.execute("SELECT key FROM live WHERE removed = 0"))


def invocations(
    db: sqlite3.Connection,
    *,
    problems: bool | None = None,
    limit: int | None = None,
    page_rows: int = PAGE_ROWS,
    silenced: bool = False,
) -> Iterator[InvocationRow]:
    """Invocations in key order, a page per read: only the problems (``problems`` True), only
    the rest (False) or all (None); at most ``limit`` of them (None: no limit); with the
    silence that held each one's latest transition back if ``silenced``."""
    where = "" if problems is None else f"AND {'' if problems else 'NOT '}{PROBLEM}"
    columns = f"*, {_SILENCED_BY}" if silenced else "*"
    sql = f"SELECT {columns} FROM invocations WHERE key > ? {where} ORDER BY key LIMIT ?"  # noqa: S608
    after, left = "", limit
    while left is None or left > 0:
        size = page_rows if left is None else min(page_rows, left)
        rows = db.execute(sql, (after, size)).fetchall()
        for row in rows:
            yield invocation_row(row)
        if len(rows) < size:
            return
        after = rows[-1]["key"]
        if left is not None:
            left -= len(rows)


def has_silences(db: sqlite3.Connection) -> bool:
    """Whether any silence was ever kept (else no transition can have been silenced)."""
    return db.execute("SELECT 1 FROM silences LIMIT 1").fetchone() is not None


def _sink_dicts(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """One entry per sink known to the outbox or to sink health; a sink whose circuit never
    opened is healthy."""
    by_health = {record.sink: record for record in reads.sink_health(db)}
    by_backlog = {row.sink: row for row in reads.backlog(db)}
    sinks = []
    for name in sorted(by_health.keys() | by_backlog.keys()):
        record, rows = by_health.get(name), by_backlog.get(name)
        healthy = record is None or record.healthy
        sinks.append(
            {
                "sink": name,
                "state": "healthy" if healthy else "unhealthy",
                "sinceMs": record.since_ms if record else None,
                "lastSuccessMs": (record.last_success_ms or None) if record else None,
                "lastError": (record.last_error or None) if record else None,
                "pending": rows.pending if rows else 0,
                "dead": rows.dead if rows else 0,
                "oldestPendingMs": (rows.oldest_created_ms or None) if rows else None,
            }
        )
    return sinks


def delivery(db: sqlite3.Connection) -> dict[str, Any]:
    """The outbox by state, the latest dead letters and each sink's health, JSON-ready."""
    dead = [
        {
            "sink": letter.sink,
            "transitionId": letter.transition_id,
            "type": letter.type,
            "invocation": letter.invocation_key,
            "attempts": letter.attempts,
            "error": letter.last_error,
            "deadMs": letter.dead_ms,
        }
        for letter in reads.dead_letters(db, 100)
    ]
    return {"outbox": reads.outbox_counts(db), "deadLetters": dead, "sinks": _sink_dicts(db)}
