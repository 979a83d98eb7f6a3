"""What ``PostgresStore`` does for replicas sharing the state, and the outbox it claims.

``ReplicaMethods`` (a mixin, as ``TrackingMethods``) gives the store the ``LeaseStore`` and
``FencedStore`` protocols over ``leases``, and the outbox side of ``OutboxStore``: unclaimed
reads and marks as a single host does them until ``claim_outbox_as`` names a replica, then
claimed ones (``leases.claim_pending``). A fenced write that finds its fence gone raises
``FencedError``: that is the replica's news, not a failing database, so write health stays
as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target
from watcher.store.postgres import leases, reads, writes
from watcher.store.postgres.tracking import SAVE_WATERMARK
from watcher.store.records import Fence, OutboxRow, ReplicaInfo

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

CLAIM_LEASES = 2
"""A row's claim lasts this many slot leases: a dead claimant's rows go out again after it."""


class Claimer:
    """Who claims outbox rows, and in which slots (read at each claim)."""

    def __init__(self, replica: str, slots: Callable[[], Collection[int]], claim_ms: int):
        self.replica, self.slots, self.claim_ms = replica, slots, claim_ms


class _Hops(Protocol):
    _claimer: Claimer | None
    _lease_ms: int

    async def _read(self, work: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def _write(
        self, work: Callable[[Conn], Awaitable[T]], *, outbox_changed: bool = ..., name: str = ...
    ) -> T: ...

    async def _refresh_backlog(self, conn: Conn) -> None: ...

    async def _mark(self, sql: str, *params: Any, name: str, changed: bool) -> None: ...


class ReplicaMethods:
    """Leases, fenced writes and the (claimed) outbox, for ``PostgresStore``."""

    _claimer: Claimer | None = None
    _lease_ms: int = 5000
    """The replica's lease (``claim_outbox_as``): how long a fenced write may sit idle."""

    # -- LeaseStore ----------------------------------------------------------------------------

    async def heartbeat(self: _Hops, replica: str, lease_ms: int) -> dict[int, int]:
        """One heartbeat: renew, rebalance to the fair share; the slots held, slot -> epoch."""
        return await self._write(
            lambda conn: leases.heartbeat(conn, replica, lease_ms),
            outbox_changed=False,
            name="heartbeat",
        )

    async def leave(self: _Hops, replica: str) -> None:
        """Hand back every slot and row claim of ``replica`` now (a graceful stop)."""
        await self._write(
            lambda conn: leases.leave(conn, replica), outbox_changed=False, name="leave"
        )

    async def replicas(self: _Hops, lease_ms: int) -> list[ReplicaInfo]:
        """Every replica known, its unexpired slots, and whether it heartbeat within a lease."""
        return await self._read(lambda conn: leases.replicas(conn, lease_ms))

    def claim_outbox_as(
        self: _Hops, replica: str | None, slots: Callable[[], Collection[int]], lease_ms: int = 5000
    ) -> None:
        """Claim outbox rows as ``replica`` in its ``slots()`` from now on (None: stop)."""
        self._claimer = (
            None if replica is None else Claimer(replica, slots, CLAIM_LEASES * lease_ms)
        )
        self._lease_ms = lease_ms

    # -- FencedStore ---------------------------------------------------------------------------

    async def commit_fenced(
        self: _Hops,
        fence: Fence,
        ref: InvocationRef,
        snapshot: Snapshot,
        *,
        transitions: Sequence[Transition],
        routes: Mapping[str, Sequence[Target]],
        now_ms: int,
        silenced: Mapping[str, str] | None = None,
    ) -> list[Transition]:
        """``commit``, if ``fence`` holds inside the same transaction; else ``FencedError``."""

        lease_ms = self._lease_ms

        async def work(conn: Conn) -> list[Transition]:
            await leases.bound_idle(conn, lease_ms)
            await leases.check_fence(conn, fence)
            return await writes.commit_poll(
                conn, ref, snapshot, transitions, routes, now_ms, silenced, fence.replica
            )

        return await self._write(work, outbox_changed=bool(routes), name="commit")

    async def save_watermark_fenced(
        self: _Hops, fence: Fence, entry: str, started_ms: int, now_ms: int
    ) -> None:
        """``save_watermark``, if ``fence`` holds; else ``FencedError``."""

        lease_ms = self._lease_ms

        async def work(conn: Conn) -> None:
            await leases.bound_idle(conn, lease_ms)
            await leases.check_fence(conn, fence)
            await conn.execute(SAVE_WATERMARK, entry, started_ms, now_ms)

        await self._write(work, outbox_changed=False, name="save_watermark")

    # -- the outbox ----------------------------------------------------------------------------

    async def pending(self: _Hops, sink: str, limit: int) -> list[OutboxRow]:
        """Pending rows of ``sink`` in commit order, due or not: claimed ones in replica mode
        (only this replica's slots, none another replica claims)."""
        claimer = self._claimer
        if claimer is None:

            async def read(conn: Conn) -> list[OutboxRow]:
                rows = await reads.pending(conn, sink, limit)
                # The dispatcher reads here every pass: it keeps the cached backlog fresh
                # even when ``redeliver`` or another host changed the outbox.
                await self._refresh_backlog(conn)
                return rows

            return await self._read(read)
        slots = list(claimer.slots())
        return await self._write(
            lambda conn: leases.claim_pending(
                conn, sink, claimer.replica, slots, claimer.claim_ms, limit
            ),
            name="claim",
        )

    async def mark_sent(self: _Hops, seqs: Iterable[int], now_ms: int) -> None:
        """Record successful delivery (the backlog cache is left to the next ``pending``)."""
        if rows := list(seqs):
            await self._mark(writes.MARK_SENT, now_ms, rows, name="mark_sent", changed=False)

    async def mark_retry(
        self: _Hops,
        seqs: Iterable[int],
        next_attempt_ms: int,
        error: str,
        *,
        own_failure: bool = True,
    ) -> None:
        """Record a failed attempt and when to try again; ``own_failure`` False when the
        sink's outage failed it (its attempts grow, its own failures do not)."""
        if rows := list(seqs):
            text = writes.clean(error[:500])
            params = (int(own_failure), next_attempt_ms, text, rows)
            await self._mark(writes.MARK_RETRY, *params, name="mark_retry", changed=True)

    async def mark_dead(self: _Hops, seqs: Iterable[int], now_ms: int, error: str) -> None:
        """Give up on rows: kept, shown by ``status``, re-sendable by ``redeliver``."""
        if rows := list(seqs):
            text = writes.clean(error[:500])
            await self._mark(writes.MARK_DEAD, now_ms, text, rows, name="mark_dead", changed=True)

    async def _mark(self: _Hops, sql: str, *params: Any, name: str, changed: bool) -> None:
        claimer = self._claimer
        if claimer is None:
            await self._write(
                lambda conn: conn.execute(sql, *params), outbox_changed=changed, name=name
            )
            return
        # A row another replica claimed since is no longer ours.
        sql, params = leases.claimed(sql, len(params) + 1), (*params, claimer.replica)

        async def work(conn: Conn) -> None:
            await leases.bound_idle(conn, claimer.claim_ms // CLAIM_LEASES)
            await conn.execute(sql, *params)

        await self._write(work, outbox_changed=changed, name=name)
