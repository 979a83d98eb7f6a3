"""The PostgreSQL backend: the same protocol and semantics as ``SqliteStore``, on a pool.

Several hosts can share it. Calls run concurrently on the pool's connections (SQLite's run one
at a time on its thread); PostgreSQL's row locks do the serialising that SQLite's single writer
did: a poll's commit is one transaction, an idempotent one (``ON CONFLICT DO NOTHING``), and
live ids and silences take their revision counter's lock.

After every write that touches the outbox the backlog per sink is read from the trigger-kept
counts and cached, so metrics scrapes and watchdog STATUS lines read memory, never the
database. Every write goes through ``_write``, which keeps the write health readiness reports
(``watcher.store.health``): a lost connection is a failed write of its own kind, and the first
write that works once the server is back makes the store healthy again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from watcher.core.clock import Clock, SystemClock
from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target
from watcher.store.errors import FencedError, StateStoreError
from watcher.store.health import WriteHealthTracker
from watcher.store.postgres import reads, writes
from watcher.store.postgres.pool import Database
from watcher.store.postgres.replicas import Claimer, ReplicaMethods
from watcher.store.postgres.silences import SilenceMethods
from watcher.store.postgres.tracking import TrackingMethods
from watcher.store.records import (
    DeadLetter,
    InvocationRow,
    Pruned,
    SinkBacklog,
    SinkHealthRecord,
    WriteHealth,
)

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")
_PROBE = "UPDATE fc_watcher_schema SET version = version"
"""A real write that changes nothing, for the health probe."""


async def open_postgres(
    url: str,
    *,
    password: str | None = None,
    readonly: bool = False,
    pool_size: int = 8,
    connect_timeout_s: float = 5.0,
    lock_timeout_s: float = 5.0,
    clock: Clock | None = None,
) -> PostgresStore:
    """Open (migrating if needed) the state in the PostgreSQL database at ``url``.

    ``password`` (from a ``*_file`` secret) overrides the URL's; with neither, asyncpg reads
    ``PGPASSFILE`` or ``~/.pgpass``. ``readonly`` checks the schema and never changes it.
    """
    database = await Database.open(
        url,
        password=password,
        pool_size=pool_size,
        connect_timeout_s=connect_timeout_s,
        lock_timeout_s=lock_timeout_s,
        readonly=readonly,
    )
    store = PostgresStore(database, clock)
    if not readonly:
        try:
            await store._read(store._refresh_backlog)
        except BaseException:
            await database.close()
            raise
    return store


class PostgresStore(ReplicaMethods, TrackingMethods, SilenceMethods):
    """The state store on PostgreSQL. Open with ``await open_postgres(url)``."""

    def __init__(self, database: Database, clock: Clock | None = None) -> None:
        self._db = database
        self._backlog: tuple[SinkBacklog, ...] = ()
        self._tickets = 0
        self._backlog_ticket = 0
        self._health = WriteHealthTracker(clock or SystemClock())
        self._claimer: Claimer | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._db.target!r})"

    @property
    def target(self) -> str:
        """The server and database, as they may be shown: no password."""
        return self._db.target

    async def close(self) -> None:
        await self._db.close()

    # -- the two kinds of hop ----------------------------------------------------------------

    async def _read(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        if self._health.probe_due():
            # Failing, and no write tried since: a test write, or readiness stays 503 forever.
            with contextlib.suppress(StateStoreError):
                await self._write(
                    lambda conn: conn.execute(_PROBE), outbox_changed=False, name="probe"
                )
        return await self._db.read(work)

    async def _write(
        self,
        work: Callable[[Conn], Awaitable[T]],
        *,
        outbox_changed: bool = True,
        name: str = "write",
    ) -> T:
        try:
            result = await self._db.write(work)
        except FencedError:
            self._health.succeeded()  # the database answered: the fence, not it, said no
            raise
        except StateStoreError as exc:
            self._health.failed(name, exc)
            raise
        self._health.succeeded()
        if outbox_changed:
            # After the commit, not inside it: the counter rows stay locked no longer than
            # the write needs them. A failed refresh leaves the cache to the next one.
            with contextlib.suppress(StateStoreError):
                await self._db.read(self._refresh_backlog)
        return result

    def write_health(self) -> WriteHealth:
        """Whether writes work, from memory: readiness and STATUS lines cost nothing."""
        return self._health.snapshot()

    async def _refresh_backlog(self, conn: Conn) -> None:
        # Calls overlap on the pool: a refresh that began before the cached one never
        # replaces it.
        self._tickets += 1
        ticket = self._tickets
        rows = tuple(await reads.backlog(conn))
        if ticket > self._backlog_ticket:
            self._backlog, self._backlog_ticket = rows, ticket

    async def _update(self, sql: str, *params: Any, name: str, outbox_changed: bool = True) -> None:
        await self._write(
            lambda conn: conn.execute(sql, *params), outbox_changed=outbox_changed, name=name
        )

    # -- PollStore / SnapshotStore ------------------------------------------------------------

    async def commit(
        self,
        ref: InvocationRef,
        snapshot: Snapshot,
        *,
        transitions: Sequence[Transition],
        routes: Mapping[str, Sequence[Target]],
        now_ms: int,
        silenced: Mapping[str, str] | None = None,
    ) -> list[Transition]:
        """Write a snapshot, its transitions and their outbox rows in one transaction.

        ``routes``: transition id -> its delivery targets; ``silenced``: -> the silence that
        held it back. Returns the new ones (one re-derived after a crash is not inserted again).
        """

        async def work(conn: Conn) -> list[Transition]:
            return await writes.commit_poll(
                conn, ref, snapshot, transitions, routes, now_ms, silenced
            )

        return await self._write(work, outbox_changed=bool(routes), name="commit")

    async def load_snapshots(self) -> dict[str, Snapshot]:
        """Every stored snapshot, by invocation key."""
        return await self._read(reads.snapshots)

    async def record_polled(self, last_polled_ms: Mapping[str, int]) -> None:
        """Persist last-poll times, batched (at shutdown: unchanged polls do not write)."""
        if last_polled_ms:
            keys, times = list(last_polled_ms), list(last_polled_ms.values())
            await self._update(
                writes.RECORD_POLLED, keys, times, name="record_polled", outbox_changed=False
            )

    # -- OutboxStore --------------------------------------------------------------------------

    async def load_transitions(self, ids: Sequence[str]) -> dict[str, Transition]:
        """The transitions with these ids, by id."""
        return await self._read(lambda conn: reads.transitions_by_id(conn, ids))

    async def pending_count(self, sink: str) -> int:
        """Pending rows of ``sink``, from the kept counts."""
        return await self._read(lambda conn: reads.pending_count(conn, sink))

    async def save_sink_health(self, record: SinkHealthRecord) -> None:
        """Write a sink's circuit after it opened or closed."""
        row = (record.sink, record.healthy, record.since_ms, record.last_success_ms)
        error = writes.clean(record.last_error[:500])
        await self._update(
            writes.SAVE_SINK_HEALTH, *row, error, name="save_sink_health", outbox_changed=False
        )

    async def sink_health(self) -> list[SinkHealthRecord]:
        """Each sink's circuit as last changed (sinks that never failed have none)."""
        return await self._read(reads.sink_health)

    # -- StatusReader -------------------------------------------------------------------------

    async def invocation_rows(self) -> list[InvocationRow]:
        """Every stored invocation, for ``status``."""
        return await self._read(reads.invocation_rows)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead-lettered rows."""
        return await self._read(lambda conn: reads.dead_letters(conn, limit))

    async def outbox_by_sink(self) -> list[SinkBacklog]:
        """Pending and dead rows per sink, read now."""
        return await self._read(reads.backlog)

    async def outbox_counts(self) -> dict[str, int]:
        """Rows by state."""
        return await self._read(reads.outbox_counts)

    async def transitions(self) -> list[Transition]:
        """The whole transition log, in commit order (tests, the demo)."""
        return await self._read(reads.transitions)

    async def redeliver(self, *, sink: str | None, transition_id: str | None, now_ms: int) -> int:
        """Put dead rows (all, or of one sink, or of one transition) back in the queue."""
        return await self._write(
            lambda conn: writes.redeliver(conn, sink, transition_id, now_ms), name="redeliver"
        )

    def cached_backlog(self) -> Sequence[SinkBacklog]:
        """The backlog as of the last outbox read or write: no database access."""
        return self._backlog

    # -- Prunable (TrackingStore and SilenceStore: the mixins) --------------------------------

    async def prune(
        self,
        *,
        changed_before_ms: int,
        protected_keys: Collection[str],
        after_key: str | None,
        batch: int,
    ) -> Pruned:
        """Delete one batch of old finished invocations and removed live ids (``writes.prune``)."""
        return await self._write(
            lambda conn: writes.prune(conn, changed_before_ms, protected_keys, after_key, batch),
            name="prune",
        )
