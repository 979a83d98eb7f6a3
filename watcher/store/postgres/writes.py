"""The SQL that changes the state, as coroutines of an open connection.

Each runs inside the caller's transaction (``pool.Database.write``): none commits on its own,
so a poll's snapshot, transitions and outbox rows land together. Rows go in as arrays
(``unnest``), one statement per table, so a commit costs a few round trips however many
transitions and sinks it has.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from watcher.core.invocation import TERMINAL_STATUSES, InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target
from watcher.store.records import Pruned
from watcher.store.rows import SNAPSHOT_FIELDS

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_COLUMNS: tuple[str, ...] = ("key", "api", "service", "function", "qualifier", "invocation_id")
_COLUMNS += (*SNAPSHOT_FIELDS, "last_polled_ms")
_UPSERT_SNAPSHOT = (
    f"INSERT INTO invocations ({', '.join(_COLUMNS)}) "  # noqa: S608 (names are ours)
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))}) "
    f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in _COLUMNS[1:])}"
)
_INSERT_TRANSITIONS = (
    "INSERT INTO transitions (id, invocation_key, type, observed_ms, data, silenced_by, "
    "committed_by) SELECT t.id, $6, t.type, t.observed_ms, t.data, t.silenced_by, $7 "
    "FROM unnest($1::text[], "
    "$2::text[], $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY "
    "AS t (id, type, observed_ms, data, silenced_by, n) ORDER BY t.n "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (transition_id, invocation_key, sink, created_ms, next_attempt_ms, "
    "severity, template) SELECT r.transition_id, $5, r.sink, $6, $6, r.severity, r.template "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY "
    "AS r (transition_id, sink, severity, template, n) ORDER BY r.n "
    "ON CONFLICT (transition_id, sink) DO NOTHING"
)


def clean(text: str) -> str:
    """``text`` as PostgreSQL TEXT takes it: a NUL (valid in SQLite, refused here) becomes
    U+FFFD, as the rest of the watcher does with bytes it cannot keep."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def snapshot_values(snapshot: Snapshot) -> list[Any]:
    """The snapshot's columns in ``SNAPSHOT_FIELDS`` order, text made storable."""
    values = (getattr(snapshot, name) for name in SNAPSHOT_FIELDS)
    return [clean(v) if isinstance(v, str) else v for v in values]


async def commit_poll(
    conn: Conn,
    ref: InvocationRef,
    snapshot: Snapshot,
    transitions: Sequence[Transition],
    routes: Mapping[str, Sequence[Target]],
    now_ms: int,
    silenced: Mapping[str, str] | None = None,
    committed_by: str = "",
) -> list[Transition]:
    """Upsert the snapshot, insert new transitions and their outbox rows; return the new
    transitions in the order given (one already logged, re-derived after a crash or by
    another replica, is not inserted again, nor queued). ``committed_by``: the replica."""
    key, fn = ref.key, ref.function_ref
    identity = (fn.api.value, fn.service, fn.function, fn.qualifier, ref.invocation_id)
    await conn.execute(_UPSERT_SNAPSHOT, key, *identity, *snapshot_values(snapshot), now_ms)
    unique = list({t.id: t for t in reversed(transitions)}.values())[::-1]  # first one wins
    if not unique:
        return []
    held = silenced or {}
    inserted = await conn.fetch(
        _INSERT_TRANSITIONS,
        [t.id for t in unique],
        [t.type.value for t in unique],
        [t.observed_ms for t in unique],
        [json.dumps(t.to_dict(), separators=(",", ":")) for t in unique],
        [held.get(t.id, "") for t in unique],
        key,
        committed_by,
    )
    new_ids = {row[0] for row in inserted}
    fresh = [t for t in unique if t.id in new_ids]
    queued = [(t.id, target) for t in fresh for target in routes.get(t.id, ())]
    if queued:
        await conn.execute(
            _INSERT_OUTBOX,
            [tid for tid, _ in queued],
            [target.sink for _, target in queued],
            [target.severity for _, target in queued],
            [target.template for _, target in queued],
            key,
            now_ms,
        )
    return fresh


MARK_SENT = (
    "UPDATE outbox SET state = 'sent', done_ms = $1, attempts = attempts + 1 "
    "WHERE seq = ANY($2::bigint[])"
)
# ``row_failures`` grows by 1 for a failure that was the row's own, by 0 for one the sink's
# outage caused: only the row's own failures may grow its backoff.
MARK_RETRY = (
    "UPDATE outbox SET attempts = attempts + 1, row_failures = row_failures + $1, "
    "next_attempt_ms = $2, last_error = $3 WHERE seq = ANY($4::bigint[])"
)
MARK_DEAD = (
    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, done_ms = $1, last_error = $2 "
    "WHERE seq = ANY($3::bigint[])"
)
SAVE_SINK_HEALTH = (
    "INSERT INTO sink_health (sink, healthy, since_ms, last_success_ms, last_error) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sink) DO UPDATE SET healthy = EXCLUDED.healthy, "
    "since_ms = EXCLUDED.since_ms, last_success_ms = EXCLUDED.last_success_ms, "
    "last_error = EXCLUDED.last_error"
)
RECORD_POLLED = (
    "UPDATE invocations i SET last_polled_ms = p.ms FROM unnest($1::text[], $2::bigint[]) "
    "AS p (key, ms) WHERE i.key = p.key AND i.last_polled_ms < p.ms"
)


def affected(status: str) -> int:
    """The row count of a command status ("UPDATE 3", "INSERT 0 2", "DELETE 0")."""
    return int(status.rsplit(" ", 1)[-1])


async def redeliver(conn: Conn, sink: str | None, transition_id: str | None, now_ms: int) -> int:
    """Put dead rows (all, or of one sink, or of one transition) back in the queue."""
    sql = (
        "UPDATE outbox SET state = 'pending', attempts = 0, row_failures = 0, "
        "next_attempt_ms = $1, created_ms = $1, done_ms = 0 WHERE state = 'dead'"
    )
    params: list[Any] = [now_ms]
    if sink is not None:
        params.append(sink)
        sql += f" AND sink = ${len(params)}"
    if transition_id is not None:
        params.append(transition_id)
        sql += f" AND transition_id = ${len(params)}"
    return affected(await conn.execute(sql, *params))


_TERMINAL = sorted(TERMINAL_STATUSES)
# Finished long ago: a terminal status (or given up as not found), unchanged since the cutoff,
# and nothing of it still waiting to be delivered or kept as a dead letter.
_PRUNABLE = (
    "SELECT key FROM invocations i WHERE key > $1 AND changed_ms < $2 "
    "AND (status = ANY($3::text[]) OR not_found_reported) "
    "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.invocation_key = i.key "
    "AND o.state != 'sent') ORDER BY key LIMIT $4"
)
PRUNE_SILENCES = "DELETE FROM silences WHERE ends_ms < $1 OR (expired_ms != 0 AND expired_ms < $1)"


async def prune(
    conn: Conn,
    changed_before_ms: int,
    protected_keys: Collection[str],
    after_key: str | None,
    batch: int,
) -> Pruned:
    """Delete one batch of old finished invocations with their transitions and sent rows.

    As SQLite's: a protected key (still tracked) keeps its snapshot, its history goes; the
    first batch of a pass also deletes live ids removed and silences ended before the cut.
    """
    if after_key is None:
        await conn.execute("DELETE FROM live WHERE removed AND changed_ms < $1", changed_before_ms)
        await conn.execute(PRUNE_SILENCES, changed_before_ms)
    rows = await conn.fetch(_PRUNABLE, after_key or "", changed_before_ms, _TERMINAL, batch)
    keys = [row[0] for row in rows]
    if not keys:
        return Pruned(0, 0, 0, None)
    outbox = await conn.execute("DELETE FROM outbox WHERE invocation_key = ANY($1)", keys)
    logged = await conn.execute("DELETE FROM transitions WHERE invocation_key = ANY($1)", keys)
    gone = [key for key in keys if key not in protected_keys]
    if gone:
        await conn.execute("DELETE FROM invocations WHERE key = ANY($1)", gone)
    return Pruned(
        invocations=len(gone),
        transitions=affected(logged),
        outbox_rows=affected(outbox),
        next_after_key=keys[-1] if len(keys) == batch else None,
    )
