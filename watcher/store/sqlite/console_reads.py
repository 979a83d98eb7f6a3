"""The reads behind the status page (``watcher.daemon.console``), as functions of a read-only
connection.

The page refreshes every 2 s beside a daemon whose state holds 100,000s of invocations, so
every read here is bounded by an index (schema version 8 added the ones it needs): no query
scans a table, counts are capped, long texts are cut in SQL before they cross into Python,
and lists are pages. ``EXPLAIN QUERY PLAN`` of each is checked by the console's tests.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watcher.core.route import FAILURE_STATUSES
from watcher.store.sqlite import reads

PAGE_ROWS = 50
COUNT_CAP = 10_000
"""Lists count their matches up to this many ("10,000+"): an exact count of a broad filter
would walk the whole index on every page view."""
NO_STATUS = "(none)"
"""The status filter value for invocations FC has not answered for yet (``status`` NULL)."""
EXCERPT_CHARS = 300
"""How much of an error message a list shows; the invocation's own page shows all of it."""
FUNCTION_NAMES_CAP = 500

_INVOCATION_COLUMNS = (
    "key, api, service, function, qualifier, invocation_id, status, already_retried_times, "
    f"substr(error_message, 1, {EXCERPT_CHARS}) AS error, changed_ms, status_since_ms, "
    "last_polled_ms, stuck_reported, not_found_reported, failing"
)


@dataclass(frozen=True, slots=True)
class InvocationFilter:
    """What the invocation list shows: all given conditions hold."""

    function: str | None = None
    status: str | None = None
    """A status, ``NO_STATUS`` for none yet, or None for any."""
    since_ms: int | None = None
    """Changed at or after this wall time (ms)."""


def status_counts(db: sqlite3.Connection) -> list[tuple[str, int]]:
    """Invocations per status (``NO_STATUS`` for none yet), from the status index alone."""
    rows = db.execute("SELECT status, COUNT(*) FROM invocations GROUP BY status ORDER BY status")
    return [(status if status is not None else NO_STATUS, int(count)) for status, count in rows]


def recent_failures(
    db: sqlite3.Connection, since_ms: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` invocations that ended badly and changed since ``since_ms``, and
    how many there are (capped). One index range per status, merged here: one query over all
    the statuses would sort every match to find the newest."""
    found: list[dict[str, Any]] = []
    sql = (
        f"SELECT {_INVOCATION_COLUMNS} FROM invocations "  # noqa: S608 (our columns)
        "WHERE status = ? AND changed_ms >= ? ORDER BY changed_ms DESC LIMIT ?"
    )
    for status in sorted(FAILURE_STATUSES):
        found += [dict(row) for row in db.execute(sql, (status, since_ms, limit))]
    found.sort(key=lambda row: row["changed_ms"], reverse=True)
    marks = ", ".join("?" * len(FAILURE_STATUSES))
    total = db.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM invocations WHERE status IN ({marks}) "  # noqa: S608
        "AND changed_ms >= ? LIMIT ?)",
        (*sorted(FAILURE_STATUSES), since_ms, COUNT_CAP + 1),
    ).fetchone()[0]
    return found[:limit], int(total)


def transitions_per_minute(db: sqlite3.Connection, since_ms: int) -> list[tuple[int, str, int]]:
    """(minute since the epoch, type, transitions) for every minute from ``since_ms`` on."""
    rows = db.execute(
        "SELECT observed_ms / 60000, type, COUNT(*) FROM transitions WHERE observed_ms >= ? "
        "GROUP BY 1, 2",
        (since_ms,),
    )
    return [(int(minute), str(kind), int(count)) for minute, kind, count in rows]


def sinks(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Each sink's circuit, backlog, dead letters and retrying rows. A sink whose circuit
    never opened has no health row and is up."""
    health = {record.sink: record for record in reads.sink_health(db)}
    backlog = {row.sink: row for row in reads.backlog(db)}
    result = []
    for name in sorted(health.keys() | backlog.keys()):
        record, rows = health.get(name), backlog.get(name)
        # Only the sink's pending rows are walked (its index range), and only while it has any.
        retrying, next_ms = db.execute(
            "SELECT COUNT(*), MIN(next_attempt_ms) FROM outbox "
            "WHERE sink = ? AND state = 'pending' AND attempts > 0",
            (name,),
        ).fetchone()
        result.append(
            {
                "sink": name,
                "healthy": record is None or record.healthy,
                "since_ms": record.since_ms if record else 0,
                "last_success_ms": record.last_success_ms if record else 0,
                "last_error": record.last_error if record else "",
                "pending": rows.pending if rows else 0,
                "dead": rows.dead if rows else 0,
                "oldest_pending_ms": rows.oldest_created_ms if rows else 0,
                "retrying": int(retrying),
                "next_attempt_ms": int(next_ms or 0),
            }
        )
    return result


def _where(where: InvocationFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1"]
    params: list[Any] = []
    if where.function is not None:
        clauses.append("function = ?")
        params.append(where.function)
    if where.status == NO_STATUS:
        clauses.append("status IS NULL")
    elif where.status is not None:
        clauses.append("status = ?")
        params.append(where.status)
    if where.since_ms is not None:
        clauses.append("changed_ms >= ?")
        params.append(where.since_ms)
    return " AND ".join(clauses), params


def invocations_page(
    db: sqlite3.Connection, where: InvocationFilter, page: int
) -> tuple[list[dict[str, Any]], int]:
    """Page ``page`` (from 1) of the matching invocations, newest change first, and how many
    match (capped at ``COUNT_CAP + 1``). The order (changed_ms, rowid) is the order of each
    index the filters can use, so no page is sorted."""
    clause, params = _where(where)
    rows = db.execute(
        f"SELECT {_INVOCATION_COLUMNS} FROM invocations WHERE {clause} "  # noqa: S608 (ours)
        "ORDER BY changed_ms DESC, rowid DESC LIMIT ? OFFSET ?",
        (*params, PAGE_ROWS, (page - 1) * PAGE_ROWS),
    ).fetchall()
    total = db.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM invocations WHERE {clause} LIMIT ?)",  # noqa: S608
        (*params, COUNT_CAP + 1),
    ).fetchone()[0]
    return [dict(row) for row in rows], int(total)


def function_names(db: sqlite3.Connection) -> list[str]:
    """The distinct function names, by skipping through the function index (one seek per
    name), not by reading every entry."""
    rows = db.execute(
        "WITH RECURSIVE names(name, n) AS ("
        " SELECT (SELECT MIN(function) FROM invocations), 1"
        " UNION ALL SELECT (SELECT MIN(function) FROM invocations WHERE function > name), n + 1"
        " FROM names WHERE name IS NOT NULL AND n < ?"
        ") SELECT name FROM names WHERE name IS NOT NULL",
        (FUNCTION_NAMES_CAP,),
    )
    return [str(row[0]) for row in rows]


def invocation(db: sqlite3.Connection, key: str) -> dict[str, Any] | None:
    """One invocation's snapshot, its error message whole."""
    row = db.execute("SELECT * FROM invocations WHERE key = ?", (key,)).fetchone()
    return dict(row) if row is not None else None


def timeline(db: sqlite3.Connection, key: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` transitions of one invocation in commit order (each with its
    decoded ``data``), and how many it has."""
    rows = db.execute(
        "SELECT seq, id, type, observed_ms, data, silenced_by FROM transitions "
        "WHERE invocation_key = ? ORDER BY seq DESC LIMIT ?",
        (key, limit),
    ).fetchall()
    total = db.execute(
        "SELECT COUNT(*) FROM transitions WHERE invocation_key = ?", (key,)
    ).fetchone()[0]
    items = []
    for row in reversed(rows):
        item = dict(row)
        item["data"] = _decoded(row["data"])
        items.append(item)
    return items, int(total)


def _decoded(text: str) -> Mapping[str, Any]:
    """A transition's stored JSON; a row that is not a JSON object shows as empty."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def deliveries(db: sqlite3.Connection, key: str) -> dict[str, list[dict[str, Any]]]:
    """Every outbox row of one invocation, by transition id, in commit order."""
    rows = db.execute(
        "SELECT seq, transition_id, sink, state, attempts, last_error, created_ms, done_ms, "
        "next_attempt_ms, severity FROM outbox WHERE invocation_key = ? ORDER BY seq",
        (key,),
    )
    by_transition: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_transition.setdefault(row["transition_id"], []).append(dict(row))
    return by_transition


def outbox_page(
    db: sqlite3.Connection, sink: str, state: str, page: int
) -> tuple[list[dict[str, Any]], int]:
    """Page ``page`` of one sink's rows in one state (pending oldest first, as they go out;
    sent and dead newest first), and how many there are (from the trigger-kept counts)."""
    order = "ASC" if state == "pending" else "DESC"
    rows = db.execute(
        "SELECT o.seq, o.transition_id, o.invocation_key, o.attempts, o.last_error, "  # noqa: S608
        "o.created_ms, o.done_ms, o.next_attempt_ms, t.type, t.observed_ms "
        "FROM outbox o LEFT JOIN transitions t ON t.id = o.transition_id "
        f"WHERE o.sink = ? AND o.state = ? ORDER BY o.seq {order} LIMIT ? OFFSET ?",
        (sink, state, PAGE_ROWS, (page - 1) * PAGE_ROWS),
    ).fetchall()
    total = db.execute(
        "SELECT rows FROM outbox_counts WHERE sink = ? AND state = ?", (sink, state)
    ).fetchone()
    return [dict(row) for row in rows], int(total[0]) if total else 0


def silences(db: sqlite3.Connection, ended_after_ms: int, limit: int) -> list[dict[str, Any]]:
    """Silences not yet ended, and those that ended after ``ended_after_ms``, newest first.

    One that was expired early ended at ``expired_ms``, before its ``ends_ms``, so every
    silence that ended after the cut has ``ends_ms`` after it too: one range of the end index.
    """
    rows = db.execute(
        "SELECT id, matchers, starts_ms, ends_ms, comment, author, created_ms, expired_ms "
        "FROM silences WHERE ends_ms >= ? AND (expired_ms = 0 OR expired_ms >= ?) "
        "ORDER BY ends_ms DESC LIMIT ?",
        (ended_after_ms, ended_after_ms, limit),
    ).fetchall()
    items = []
    for row in rows:
        item = dict(row)
        item["matchers"] = _decoded(row["matchers"])
        items.append(item)
    return items
