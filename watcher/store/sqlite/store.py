"""The SQLite backend: every database call runs on one worker thread, off the event loop.

One thread, so SQLite sees one writer and the connection never crosses threads; one hop per
transaction (not per statement, as aiosqlite does), so a changed poll costs one hand-over.
While another process holds the database, a commit waits on that thread up to the busy
timeout, and unchanged polls and watchdog pings go on meanwhile.

After every hop that touches the outbox the backlog per sink is read from the trigger-kept
counts and cached, so metrics scrapes and watchdog STATUS lines read memory, never the DB.
Every write goes through ``_write``, which keeps the write health readiness reports
(``watcher.store.health``); the daemon's open first checks the file (``startup``). Live ids
and watermarks are the ``tracking`` mixin's, silences the ``silences`` one's: same hops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from watcher.core.clock import Clock, SystemClock
from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target
from watcher.store.errors import StateStoreError
from watcher.store.health import WriteHealthTracker
from watcher.store.records import (
    DeadLetter,
    InvocationRow,
    OutboxRow,
    Pruned,
    SinkBacklog,
    SinkHealthRecord,
    WriteHealth,
)
from watcher.store.sqlite import reads, writes
from watcher.store.sqlite.connection import read, run_many, take_lock, write_transaction
from watcher.store.sqlite.silences import SilenceMethods
from watcher.store.sqlite.startup import CHECK_BUDGET_S, open_checked, rewrite_header
from watcher.store.sqlite.tracking import TrackingMethods

T = TypeVar("T")


class SqliteStore(TrackingMethods, SilenceMethods):
    """The state store on one SQLite file (WAL). Open with ``await SqliteStore.open(path)``."""

    def __init__(
        self,
        path: Path,
        executor: ThreadPoolExecutor,
        connection: sqlite3.Connection,
        lock: IO[str] | None,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self._executor = executor
        self._db = connection
        self._lock = lock
        self._backlog: tuple[SinkBacklog, ...] = ()
        self._health = WriteHealthTracker(clock or SystemClock())

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        readonly: bool = False,
        beside_daemon: bool = False,
        busy_timeout_s: float = 5.0,
        check_budget_s: float = CHECK_BUDGET_S,
        clock: Clock | None = None,
    ) -> SqliteStore:
        """Open (creating and migrating if needed) the state DB at ``path``.

        ``beside_daemon`` opens an existing DB for small writes (``redeliver``) without the
        daemon's lock: SQLite itself serialises the writes. ``busy_timeout_s`` is how long a
        write waits for another process's transaction. The daemon's open (neither of those)
        checks the file is intact, within ``check_budget_s``, and writable.
        """
        if (readonly or beside_daemon) and not path.exists():  # noqa: ASYNC240 (one stat)
            raise StateStoreError(f"state DB {path} does not exist yet; run the watcher first")
        lock = None if readonly or beside_daemon else take_lock(path)
        budget_s = None if lock is None else check_budget_s
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-db")
        try:
            connection = await asyncio.get_running_loop().run_in_executor(
                executor, lambda: open_checked(path, readonly, busy_timeout_s, budget_s)
            )
        except BaseException:
            executor.shutdown(wait=False)
            if lock is not None:
                lock.close()
            raise
        store = cls(path, executor, connection, lock, clock)
        if not readonly:
            await store._read(store._refresh_backlog)
        return store

    async def close(self) -> None:
        await self._hop(self._db.close)
        self._executor.shutdown(wait=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- the two kinds of hop ----------------------------------------------------------------

    async def _hop(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _read(self, work: Callable[[], T]) -> T:
        if self._health.probe_due():
            # Failing, and no write tried since: a test write, or readiness stays 503 forever.
            with contextlib.suppress(StateStoreError):
                await self._write(
                    lambda: rewrite_header(self._db), outbox_changed=False, name="probe"
                )
        return await self._hop(lambda: read(self.path, work))

    async def _write(
        self, work: Callable[[], T], *, outbox_changed: bool = True, name: str = "write"
    ) -> T:
        def transaction() -> T:
            result = write_transaction(self._db, self.path, work)
            if outbox_changed:
                read(self.path, self._refresh_backlog)
            return result

        try:
            result = await self._hop(transaction)
        except StateStoreError as exc:
            self._health.failed(name, exc)
            raise
        self._health.succeeded()
        return result

    def write_health(self) -> WriteHealth:
        """Whether writes work, from memory: readiness and STATUS lines cost nothing."""
        return self._health.snapshot()

    def _refresh_backlog(self) -> None:
        self._backlog = tuple(reads.backlog(self._db))

    async def _update(
        self, sql: str, rows: list[tuple[Any, ...]], *, name: str, outbox_changed: bool = True
    ) -> None:
        if rows:
            work = functools.partial(run_many, self._db, sql, rows)
            await self._write(work, outbox_changed=outbox_changed, name=name)

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
        work = functools.partial(
            writes.commit_poll, self._db, ref, snapshot, transitions, routes, now_ms, silenced
        )
        return await self._write(work, outbox_changed=bool(routes), name="commit")

    async def load_snapshots(self) -> dict[str, Snapshot]:
        """Every stored snapshot, by invocation key."""
        return await self._read(lambda: reads.snapshots(self._db))

    async def record_polled(self, last_polled_ms: Mapping[str, int]) -> None:
        """Persist last-poll times, batched: unchanged polls do not write, so this runs at
        shutdown (``status`` shows last-poll times as of the last write)."""
        rows = [(ms, key, ms) for key, ms in last_polled_ms.items()]
        await self._update(writes.RECORD_POLLED, rows, name="record_polled", outbox_changed=False)

    # -- OutboxStore --------------------------------------------------------------------------

    async def pending(self, sink: str, limit: int) -> list[OutboxRow]:
        """Pending rows of ``sink`` in commit order, due or not."""

        def work() -> list[OutboxRow]:
            rows = reads.pending(self._db, sink, limit)
            # The dispatcher reads here every pass: it keeps the cached backlog fresh even
            # when ``redeliver`` changed the outbox from another process.
            self._refresh_backlog()
            return rows

        return await self._read(work)

    async def load_transitions(self, ids: Sequence[str]) -> dict[str, Transition]:
        """The transitions with these ids, by id."""
        return await self._read(lambda: reads.transitions_by_id(self._db, ids))

    async def mark_sent(self, seqs: Iterable[int], now_ms: int) -> None:
        """Record successful delivery (the backlog cache is left to the next ``pending``:
        re-reading it after every delivery cost a second query a row)."""
        rows = [(now_ms, seq) for seq in seqs]
        await self._update(writes.MARK_SENT, rows, name="mark_sent", outbox_changed=False)

    async def mark_retry(
        self, seqs: Iterable[int], next_attempt_ms: int, error: str, *, own_failure: bool = True
    ) -> None:
        """Record a failed attempt and when to try again; ``own_failure`` False when the
        sink's outage failed it (its attempts grow, its own failures do not)."""
        rows = [(int(own_failure), next_attempt_ms, error[:500], seq) for seq in seqs]
        await self._update(writes.MARK_RETRY, rows, name="mark_retry")

    async def pending_count(self, sink: str) -> int:
        """Pending rows of ``sink``, from the kept counts."""
        return await self._read(lambda: reads.pending_count(self._db, sink))

    async def save_sink_health(self, record: SinkHealthRecord) -> None:
        """Write a sink's circuit after it opened or closed."""
        row = (
            record.sink,
            int(record.healthy),
            record.since_ms,
            record.last_success_ms,
            record.last_error[:500],
        )
        await self._update(
            writes.SAVE_SINK_HEALTH, [row], name="save_sink_health", outbox_changed=False
        )

    async def sink_health(self) -> list[SinkHealthRecord]:
        """Each sink's circuit as last changed (sinks that never failed have none)."""
        return await self._read(lambda: reads.sink_health(self._db))

    async def mark_dead(self, seqs: Iterable[int], now_ms: int, error: str) -> None:
        """Give up on rows: kept, shown by ``status``, re-sendable by ``redeliver``."""
        rows = [(now_ms, error[:500], seq) for seq in seqs]
        await self._update(writes.MARK_DEAD, rows, name="mark_dead")

    # -- StatusReader -------------------------------------------------------------------------

    async def invocation_rows(self) -> list[InvocationRow]:
        """Every stored invocation, for ``status``."""
        return await self._read(lambda: reads.invocation_rows(self._db))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead-lettered rows."""
        return await self._read(lambda: reads.dead_letters(self._db, limit))

    async def outbox_by_sink(self) -> list[SinkBacklog]:
        """Pending and dead rows per sink, read now."""
        return await self._read(lambda: reads.backlog(self._db))

    async def outbox_counts(self) -> dict[str, int]:
        """Rows by state."""
        return await self._read(lambda: reads.outbox_counts(self._db))

    async def transitions(self) -> list[Transition]:
        """The whole transition log, in commit order (tests, the demo)."""
        return await self._read(lambda: reads.transitions(self._db))

    async def redeliver(self, *, sink: str | None, transition_id: str | None, now_ms: int) -> int:
        """Put dead rows (all, or of one sink, or of one transition) back in the queue."""
        return await self._write(
            lambda: writes.redeliver(self._db, sink, transition_id, now_ms), name="redeliver"
        )

    async def total_changes(self) -> int:
        """Rows written through this store since it opened (unchanged polls write none)."""
        return await self._hop(lambda: self._db.total_changes)

    def cached_backlog(self) -> Sequence[SinkBacklog]:
        """The backlog as of the last outbox read or write: no database access."""
        return self._backlog

    # -- Prunable (TrackingStore: the ``TrackingMethods`` mixin) ------------------------------
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
            lambda: writes.prune(self._db, changed_before_ms, protected_keys, after_key, batch),
            name="prune",
        )
