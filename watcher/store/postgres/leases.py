"""Replicas sharing one PostgreSQL state: slot leases, fences and outbox claims, as SQL.

Every time here is the database's (``clock_timestamp()``), never a replica's: replicas on
hosts whose clocks disagree still agree on who holds a slot. A heartbeat is one transaction:
upsert the replica's row, renew its unexpired slots, list the live replicas, hand back what is
above its fair share (by its rank among them) and take free or expired slots up to it
(``watcher.core.slots`` decides; ``FOR UPDATE SKIP LOCKED``, so two replicas never take the
same slot, and each take bumps the slot's epoch). A fenced write first takes a share lock on
its slot's row, as held: a replica that lost the slot (a pause, a partition) commits nothing
for it.

Outbox rows are claimed, not just read, in replica mode: only rows of slots the replica holds
(in its memory and in the database), locked with ``SKIP LOCKED`` and given a claim lease; a
row whose claimant died is claimed again once the lease ran out, and sent again with the same
webhook-id (at least once). Marks touch only rows the replica still claims.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from watcher.core.slots import plan_lease
from watcher.store.errors import FencedError
from watcher.store.records import Fence, OutboxRow, ReplicaInfo

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
"""The database's clock, in epoch milliseconds."""

_FORGET_MS = 86_400_000
_BEAT = (
    "INSERT INTO replicas (id, started_ms, heartbeat_ms) VALUES ($1, $2, $2) "
    "ON CONFLICT (id) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms"
)
_RENEW = (
    "UPDATE slots SET expires_ms = $2::bigint + $3::bigint WHERE owner = $1 AND expires_ms > $2 "
    "RETURNING slot, epoch"
)
_LIVE = "SELECT id FROM replicas WHERE heartbeat_ms > $1::bigint - $2::bigint ORDER BY id"
_RELEASE = "UPDATE slots SET owner = NULL, expires_ms = 0 WHERE owner = $1 AND slot = ANY($2)"
_TAKE = (
    "UPDATE slots s SET owner = $1, epoch = s.epoch + 1, expires_ms = $2::bigint + $3::bigint "
    "FROM ("
    "SELECT slot FROM slots WHERE owner IS NULL OR expires_ms <= $2 ORDER BY slot LIMIT $4 "
    "FOR UPDATE SKIP LOCKED) f WHERE s.slot = f.slot RETURNING s.slot, s.epoch"
)


async def heartbeat(conn: Conn, replica: str, lease_ms: int) -> dict[int, int]:
    """One heartbeat (the caller's transaction): the slots held afterwards, slot -> epoch."""
    await bound_idle(conn, lease_ms)
    # The server gives up on a slow heartbeat (cleanly, its transaction rolled back) well
    # inside the lease, rather than the replica cancelling a query in flight.
    await conn.execute(f"SET LOCAL statement_timeout = {max(1, lease_ms // 2)}")
    now_ms = int(await conn.fetchval(f"SELECT {NOW}"))
    await conn.execute(_BEAT, replica, now_ms)
    held = {
        int(slot): int(epoch) for slot, epoch in await conn.fetch(_RENEW, replica, now_ms, lease_ms)
    }
    # Replicas gone a day are forgotten: ids of crashed processes (hostname-pid) would pile up.
    await conn.execute(
        "DELETE FROM replicas WHERE heartbeat_ms < $1::bigint - $2", now_ms, _FORGET_MS
    )
    live = [row[0] for row in await conn.fetch(_LIVE, now_ms, lease_ms)]
    plan = plan_lease(held, len(live), live.index(replica))
    if plan.release:
        await conn.execute(_RELEASE, replica, list(plan.release))
        for slot in plan.release:
            del held[slot]
    if plan.take:
        taken = await conn.fetch(_TAKE, replica, now_ms, lease_ms, plan.take)
        held.update({int(slot): int(epoch) for slot, epoch in taken})
    return held


async def leave(conn: Conn, replica: str) -> None:
    """Hand back every slot and row claim of ``replica`` and delete its row: the next
    heartbeat of another replica takes its work at once, not a lease later."""
    await conn.execute("UPDATE slots SET owner = NULL, expires_ms = 0 WHERE owner = $1", replica)
    await conn.execute(
        "UPDATE outbox SET claimed_by = NULL, claim_until_ms = 0 "
        "WHERE claimed_by = $1 AND state = 'pending'",
        replica,
    )
    await conn.execute("DELETE FROM replicas WHERE id = $1", replica)


_REPLICAS = f"""
SELECT r.id, r.started_ms, r.heartbeat_ms, r.heartbeat_ms > {NOW} - $1::bigint AS live,
       COALESCE(array_agg(s.slot ORDER BY s.slot) FILTER (WHERE s.slot IS NOT NULL), '{{}}'),
       {NOW} - r.heartbeat_ms
FROM replicas r LEFT JOIN slots s ON s.owner = r.id AND s.expires_ms > {NOW}
GROUP BY r.id ORDER BY r.id
"""  # noqa: S608 (no input)


async def replicas(conn: Conn, lease_ms: int) -> list[ReplicaInfo]:
    """Every replica known, with its unexpired slots; live when it heartbeat within a lease."""
    rows = await conn.fetch(_REPLICAS, lease_ms)
    return [
        ReplicaInfo(
            row[0],
            int(row[1]),
            int(row[2]),
            tuple(int(s) for s in row[4]),
            bool(row[3]),
            int(row[5]),
        )
        for row in rows
    ]


async def bound_idle(conn: Conn, lease_ms: int) -> None:
    """End this transaction (the server closes the session) if the replica leaves it idle
    for a lease: a replica stopped mid-write (SIGSTOP, a GC stall) would otherwise hold its
    row locks, the fence's among them, and keep every other replica from taking its slots."""
    await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {max(1, int(lease_ms))}")


_FENCE = (
    "SELECT 1 FROM slots WHERE slot = $1 AND owner = $2 AND epoch = $3 "  # noqa: S608 (no input)
    f"AND expires_ms > {NOW} FOR SHARE"
)


async def check_fence(conn: Conn, fence: Fence) -> None:
    """Raise ``FencedError`` unless ``fence`` holds now; its share lock keeps it held (no
    heartbeat can hand the slot over) until the caller's transaction ends."""
    if await conn.fetchval(_FENCE, fence.slot, fence.replica, fence.epoch) is None:
        raise FencedError(
            f"slot {fence.slot} (epoch {fence.epoch}) is no longer held by replica "
            f"{fence.replica}; its write was rolled back"
        )


_CLAIMABLE = (
    "SELECT seq, transition_id, invocation_key, attempts, next_attempt_ms, created_ms, "  # noqa: S608 (no input)
    f"severity, template, row_failures, claimed_by, claim_until_ms, {NOW} AS now_ms "
    "FROM outbox WHERE sink = $1 AND state = 'pending' AND slot = ANY($2::integer[]) "
    f"AND (claimed_by IS NULL OR claimed_by = $3 OR claim_until_ms <= {NOW}) "
    # Held in the database too, not only in the replica's memory: one that resumes from a
    # pause before its next heartbeat claims nothing in the slots it lost meanwhile.
    f"AND slot IN (SELECT slot FROM slots WHERE owner = $3 AND expires_ms > {NOW}) "
    "ORDER BY seq LIMIT $4 FOR UPDATE OF outbox SKIP LOCKED"
)
_CLAIM = "UPDATE outbox SET claimed_by = $1, claim_until_ms = $2 WHERE seq = ANY($3::bigint[])"


async def claim_pending(
    conn: Conn, sink: str, replica: str, slots: Collection[int], claim_ms: int, limit: int
) -> list[OutboxRow]:
    """Claim (the caller's transaction) and return the pending rows of ``sink`` in ``slots``,
    in commit order. A claim is renewed only once half of it is gone: a dispatcher pass that
    re-reads its own rows mostly writes nothing."""
    if not slots:
        return []
    await bound_idle(conn, claim_ms // 2)
    rows = await conn.fetch(_CLAIMABLE, sink, sorted(slots), replica, limit)
    renew = [row[0] for row in rows if row[9] != replica or row[10] - row[11] < claim_ms // 2]
    if renew:
        await conn.execute(_CLAIM, replica, int(rows[0][11]) + claim_ms, renew)
    return [OutboxRow(*row[:9]) for row in rows]


def claimed(sql: str, parameter: int) -> str:
    """A mark of ``writes`` that touches only the rows the replica at ``$parameter`` claims."""
    return f"{sql} AND claimed_by = ${parameter}"
