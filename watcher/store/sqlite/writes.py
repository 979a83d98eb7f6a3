"""The SQL that changes the state, as functions of an open connection.

Each runs inside the caller's transaction (``connection.write_transaction``): none of them
commits on its own, so a poll's snapshot, transitions and outbox rows land together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from watcher.core.invocation import TERMINAL_STATUSES, InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target
from watcher.store.records import Pruned
from watcher.store.rows import SNAPSHOT_FIELDS
from watcher.store.sqlite.silences import PRUNE_SILENCES

_COLUMNS: tuple[str, ...] = ("key", "api", "service", "function", "qualifier", "invocation_id")
_COLUMNS += (*SNAPSHOT_FIELDS, "last_polled_ms")
_UPSERT_SNAPSHOT = (
    f"INSERT INTO invocations ({', '.join(_COLUMNS)}) "  # noqa: S608 (names are ours)
    f"VALUES ({', '.join('?' * len(_COLUMNS))}) "
    f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in _COLUMNS[1:])}"
)
_INSERT_TRANSITION = (
    "INSERT OR IGNORE INTO transitions (id, invocation_key, type, observed_ms, data, "
    "silenced_by) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox (transition_id, invocation_key, sink, created_ms, "
    "next_attempt_ms, severity, template) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def commit_poll(
    db: sqlite3.Connection,
    ref: InvocationRef,
    snapshot: Snapshot,
    transitions: Sequence[Transition],
    routes: Mapping[str, Sequence[Target]],
    now_ms: int,
    silenced: Mapping[str, str] | None = None,
) -> list[Transition]:
    """Upsert the snapshot, insert new transitions and their outbox rows; return the new
    transitions (one already logged, re-derived after a crash, is not inserted again).
    ``silenced`` names the silence that held a transition back (its routes already lack
    the alerting sinks): recorded with it, so ``status`` can say why nobody was told."""
    key = ref.key
    fn = ref.function_ref
    identity = (fn.api.value, fn.service, fn.function, fn.qualifier, ref.invocation_id)
    values = (key, *identity, *(getattr(snapshot, n) for n in SNAPSHOT_FIELDS), now_ms)
    db.execute(_UPSERT_SNAPSHOT, values)
    fresh: list[Transition] = []
    for transition in transitions:
        data = json.dumps(transition.to_dict(), separators=(",", ":"))
        cursor = db.execute(
            _INSERT_TRANSITION,
            (
                transition.id,
                key,
                transition.type.value,
                transition.observed_ms,
                data,
                (silenced or {}).get(transition.id, ""),
            ),
        )
        if cursor.rowcount != 1:
            continue
        fresh.append(transition)
        db.executemany(
            _INSERT_OUTBOX,
            [
                (transition.id, key, t.sink, now_ms, now_ms, t.severity, t.template)
                for t in routes.get(transition.id, ())
            ],
        )
    return fresh


MARK_SENT = "UPDATE outbox SET state = 'sent', done_ms = ?, attempts = attempts + 1 WHERE seq = ?"
# ``row_failures`` grows by 1 for a failure that was the row's own, by 0 for one the sink's
# outage caused: only the row's own failures may grow its backoff.
MARK_RETRY = (
    "UPDATE outbox SET attempts = attempts + 1, row_failures = row_failures + ?, "
    "next_attempt_ms = ?, last_error = ? WHERE seq = ?"
)
MARK_DEAD = (
    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, done_ms = ?, last_error = ? "
    "WHERE seq = ?"
)
SAVE_SINK_HEALTH = (
    "INSERT INTO sink_health (sink, healthy, since_ms, last_success_ms, last_error) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink) DO UPDATE SET healthy = excluded.healthy, "
    "since_ms = excluded.since_ms, last_success_ms = excluded.last_success_ms, "
    "last_error = excluded.last_error"
)
RECORD_POLLED = "UPDATE invocations SET last_polled_ms = ? WHERE key = ? AND last_polled_ms < ?"


def redeliver(
    db: sqlite3.Connection, sink: str | None, transition_id: str | None, now_ms: int
) -> int:
    """Put dead rows (all, or of one sink, or of one transition) back in the queue."""
    sql = (
        "UPDATE outbox SET state = 'pending', attempts = 0, row_failures = 0, "
        "next_attempt_ms = ?, created_ms = ?, done_ms = 0 WHERE state = 'dead'"
    )
    params: list[Any] = [now_ms, now_ms]
    if sink is not None:
        sql += " AND sink = ?"
        params.append(sink)
    if transition_id is not None:
        sql += " AND transition_id = ?"
        params.append(transition_id)
    return int(db.execute(sql, params).rowcount)


_TERMINAL = tuple(sorted(TERMINAL_STATUSES))
# Finished long ago: a terminal status (or given up as not found), unchanged since the cutoff,
# and nothing of it still waiting to be delivered or kept as a dead letter.
_PRUNABLE = (
    "SELECT key FROM invocations i "  # noqa: S608 (placeholders only)
    "WHERE key > ? AND changed_ms < ? "
    f"AND (status IN ({', '.join('?' * len(_TERMINAL))}) OR not_found_reported = 1) "
    "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.invocation_key = i.key "
    "AND o.state != 'sent') ORDER BY key LIMIT ?"
)


def prune(
    db: sqlite3.Connection,
    changed_before_ms: int,
    protected_keys: Collection[str],
    after_key: str | None,
    batch: int,
) -> Pruned:
    """Delete one batch of old finished invocations with their transitions and sent rows.

    A protected key (still tracked) keeps its snapshot, so that it is not reported again as a
    first sighting; its history goes all the same. The first batch of a pass also deletes the
    live ids removed and the silences ended before the cut (every daemon has long applied
    the removal, and let the silence go).
    """
    if after_key is None:
        db.execute("DELETE FROM live WHERE removed = 1 AND changed_ms < ?", (changed_before_ms,))
        db.execute(PRUNE_SILENCES, (changed_before_ms, changed_before_ms))
    keys = [
        row[0]
        for row in db.execute(_PRUNABLE, (after_key or "", changed_before_ms, *_TERMINAL, batch))
    ]
    if not keys:
        return Pruned(0, 0, 0, None)
    marks = ", ".join("?" * len(keys))
    outbox = db.execute(f"DELETE FROM outbox WHERE invocation_key IN ({marks})", keys)  # noqa: S608
    logged = db.execute(f"DELETE FROM transitions WHERE invocation_key IN ({marks})", keys)  # noqa: S608
    gone = [key for key in keys if key not in protected_keys]
    if gone:
        db.execute(
            f"DELETE FROM invocations WHERE key IN ({', '.join('?' * len(gone))})",  # noqa: S608
            gone,
        )
    return Pruned(
        invocations=len(gone),
        transitions=logged.rowcount,
        outbox_rows=outbox.rowcount,
        next_after_key=keys[-1] if len(keys) == batch else None,
    )
