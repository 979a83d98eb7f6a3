"""The SQL that reads the state, as functions of an open connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from watcher.core.model import Snapshot, Transition
from watcher.store.records import (
    DeadLetter,
    InvocationRow,
    OutboxRow,
    SinkBacklog,
    SinkHealthRecord,
)
from watcher.store.rows import invocation_row, snapshot_of_row


def snapshots(db: sqlite3.Connection) -> dict[str, Snapshot]:
    """Every stored snapshot, by invocation key."""
    return {row["key"]: snapshot_of_row(row) for row in db.execute("SELECT * FROM invocations")}


def invocation_rows(db: sqlite3.Connection) -> list[InvocationRow]:
    """Every stored invocation, for ``status``."""
    return [invocation_row(row) for row in db.execute("SELECT * FROM invocations ORDER BY key")]


def pending(db: sqlite3.Connection, sink: str, limit: int) -> list[OutboxRow]:
    """Pending rows of ``sink`` in commit order, due or not.

    Without the transitions themselves: after an outage a dispatcher pass reads many rows to
    choose a few, and decoding every row's transition made each pass cost ~20 ms per 1,000
    rows. ``transitions_by_id`` reads the chosen ones.
    """
    rows = db.execute(
        "SELECT seq, transition_id, invocation_key, attempts, next_attempt_ms, created_ms, "
        "severity, template, row_failures FROM outbox WHERE sink = ? AND state = 'pending' "
        "ORDER BY seq LIMIT ?",
        (sink, limit),
    ).fetchall()
    return [OutboxRow(*row) for row in rows]


def pending_count(db: sqlite3.Connection, sink: str) -> int:
    """Pending rows of ``sink``, from the trigger-kept counts: no outbox scan."""
    row = db.execute(
        "SELECT rows FROM outbox_counts WHERE sink = ? AND state = 'pending'", (sink,)
    ).fetchone()
    return int(row[0]) if row else 0


def sink_health(db: sqlite3.Connection) -> list[SinkHealthRecord]:
    """Each sink's circuit as last changed, by sink name."""
    rows = db.execute(
        "SELECT sink, healthy, since_ms, last_success_ms, last_error FROM sink_health ORDER BY sink"
    )
    return [SinkHealthRecord(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows]


def transitions_by_id(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Transition]:
    """The transitions with these ids, by id."""
    found: dict[str, Transition] = {}
    for start in range(0, len(ids), 500):  # well under SQLite's bound on parameters
        chunk = ids[start : start + 500]
        rows = db.execute(
            f"SELECT id, data FROM transitions WHERE id IN ({', '.join('?' * len(chunk))})",  # noqa: S608
            chunk,
        )
        found.update((row[0], Transition.from_dict(json.loads(row[1]))) for row in rows)
    return found


def dead_letters(db: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    """The most recent dead-lettered rows."""
    rows = db.execute(
        "SELECT o.seq, o.sink, o.transition_id, o.invocation_key, o.attempts, o.last_error, "
        "o.done_ms, t.type FROM outbox o JOIN transitions t ON t.id = o.transition_id "
        "WHERE o.state = 'dead' ORDER BY o.seq DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [DeadLetter(*row) for row in rows]


def backlog(db: sqlite3.Connection) -> list[SinkBacklog]:
    """Pending and dead rows per sink, with the oldest pending row's creation time.

    From the trigger-kept counts and one index lookup per sink: no outbox scan.
    """
    counts: dict[str, dict[str, int]] = {}
    for sink, state, rows in db.execute("SELECT sink, state, rows FROM outbox_counts"):
        counts.setdefault(sink, {})[state] = rows
    result = []
    for sink in sorted(counts):
        oldest = db.execute(
            "SELECT MIN(created_ms) FROM outbox WHERE sink = ? AND state = 'pending'", (sink,)
        ).fetchone()[0]
        by_state = counts[sink]
        pending_rows, dead_rows = by_state.get("pending", 0), by_state.get("dead", 0)
        if pending_rows or dead_rows or by_state.get("sent", 0):
            result.append(SinkBacklog(sink, pending_rows, dead_rows, int(oldest or 0)))
    return result


def outbox_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Rows by state (states with no rows left out)."""
    rows = db.execute("SELECT state, SUM(rows) FROM outbox_counts GROUP BY state")
    return {state: int(total) for state, total in rows if total}


def transitions(db: sqlite3.Connection) -> list[Transition]:
    """The whole transition log, in commit order (for tests, the demo and ``status``)."""
    rows = db.execute("SELECT data FROM transitions ORDER BY seq")
    return [Transition.from_dict(json.loads(row[0])) for row in rows]
