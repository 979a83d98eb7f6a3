"""The SQL that reads the state, as coroutines of an open connection."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from watcher.core.model import Snapshot, Transition
from watcher.store.records import (
    DeadLetter,
    InvocationRow,
    OutboxRow,
    SinkBacklog,
    SinkHealthRecord,
)
from watcher.store.rows import invocation_row, snapshot_of_row

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


async def snapshots(conn: Conn) -> dict[str, Snapshot]:
    """Every stored snapshot, by invocation key."""
    return {
        row["key"]: snapshot_of_row(row) for row in await conn.fetch("SELECT * FROM invocations")
    }


async def snapshots_of(conn: Conn, keys: Collection[str]) -> dict[str, Snapshot]:
    """The stored snapshots of ``keys`` (those that have one), by key."""
    rows = await conn.fetch("SELECT * FROM invocations WHERE key = ANY($1)", list(keys))
    return {row["key"]: snapshot_of_row(row) for row in rows}


async def invocation_rows(conn: Conn) -> list[InvocationRow]:
    """Every stored invocation, for ``status``."""
    return [
        invocation_row(row) for row in await conn.fetch("SELECT * FROM invocations ORDER BY key")
    ]


async def pending(conn: Conn, sink: str, limit: int) -> list[OutboxRow]:
    """Pending rows of ``sink`` in commit order, due or not; without the transitions, which
    ``transitions_by_id`` reads for the few a dispatcher pass chooses."""
    rows = await conn.fetch(
        "SELECT seq, transition_id, invocation_key, attempts, next_attempt_ms, created_ms, "
        "severity, template, row_failures FROM outbox WHERE sink = $1 AND state = 'pending' "
        "ORDER BY seq LIMIT $2",
        sink,
        limit,
    )
    return [OutboxRow(*row) for row in rows]


async def pending_count(conn: Conn, sink: str) -> int:
    """Pending rows of ``sink``, from the trigger-kept counts: no outbox scan."""
    total = await conn.fetchval(
        "SELECT total FROM outbox_counts WHERE sink = $1 AND state = 'pending'", sink
    )
    return int(total or 0)


async def sink_health(conn: Conn) -> list[SinkHealthRecord]:
    """Each sink's circuit as last changed, by sink name."""
    rows = await conn.fetch(
        "SELECT sink, healthy, since_ms, last_success_ms, last_error FROM sink_health ORDER BY sink"
    )
    return [SinkHealthRecord(*row) for row in rows]


async def transitions_by_id(conn: Conn, ids: Sequence[str]) -> dict[str, Transition]:
    """The transitions with these ids, by id (one array parameter: no chunking)."""
    rows = await conn.fetch("SELECT id, data FROM transitions WHERE id = ANY($1)", list(ids))
    return {row[0]: Transition.from_dict(json.loads(row[1])) for row in rows}


async def dead_letters(conn: Conn, limit: int) -> list[DeadLetter]:
    """The most recent dead-lettered rows."""
    rows = await conn.fetch(
        "SELECT o.seq, o.sink, o.transition_id, o.invocation_key, o.attempts, o.last_error, "
        "o.done_ms, t.type FROM outbox o JOIN transitions t ON t.id = o.transition_id "
        "WHERE o.state = 'dead' ORDER BY o.seq DESC LIMIT $1",
        limit,
    )
    return [DeadLetter(*row) for row in rows]


# The counts per sink from the trigger-kept table, and the oldest pending row by one probe of
# the partial index per sink: no outbox scan, however large the backlog.
_BACKLOG = """
SELECT c.sink,
       COALESCE(SUM(c.total) FILTER (WHERE c.state = 'pending'), 0) AS pending,
       COALESCE(SUM(c.total) FILTER (WHERE c.state = 'dead'), 0) AS dead,
       (SELECT MIN(o.created_ms) FROM outbox o WHERE o.sink = c.sink AND o.state = 'pending')
FROM outbox_counts c GROUP BY c.sink HAVING SUM(c.total) > 0 ORDER BY c.sink
"""


async def backlog(conn: Conn) -> list[SinkBacklog]:
    """Pending and dead rows per sink (a sink with only sent rows too), with the oldest
    pending row's creation time."""
    rows = await conn.fetch(_BACKLOG)
    return [SinkBacklog(sink, int(p), int(d), int(oldest or 0)) for sink, p, d, oldest in rows]


async def outbox_counts(conn: Conn) -> dict[str, int]:
    """Rows by state (states with no rows left out)."""
    rows = await conn.fetch("SELECT state, SUM(total) FROM outbox_counts GROUP BY state")
    return {state: int(total) for state, total in rows if total}


async def transitions(conn: Conn) -> list[Transition]:
    """The whole transition log, in commit order (for tests, the demo and ``status``)."""
    rows = await conn.fetch("SELECT data FROM transitions ORDER BY seq")
    return [Transition.from_dict(json.loads(row[0])) for row in rows]
