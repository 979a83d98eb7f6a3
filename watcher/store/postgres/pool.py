"""The connection pool, and the one way to read and the one way to write.

Every asyncpg error leaves this module as a ``StateStoreError`` (``diagnose.explain``): one
line, its kind, no password. The pool reconnects by itself: a connection the server dropped is
replaced at the next acquire, and while the server is down each call fails fast (refused, or
the connect timeout) and the next one after it is back succeeds.

A call that fails on a lost connection is tried once more on a fresh one when that is safe:
a read always, a write only if the failure came before its transaction began (a connection
the server dropped while it sat in the pool, found dead at ``BEGIN``). Past ``BEGIN`` nothing
is retried here: whether a COMMIT that lost its connection landed is unknown, and the caller's
own retry (the next poll, the next dispatcher pass) is idempotent where it matters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import asyncpg

from watcher.store.errors import StateStoreError
from watcher.store.postgres.diagnose import connection_failed, explain, redact, secrets_of
from watcher.store.postgres.schema import migrate

if TYPE_CHECKING:
    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

_CLOSE_TIMEOUT_S = 10.0


class _NotBegun(Exception):
    """Wraps a failure that came before ``BEGIN`` completed: nothing of the write ran."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Database:
    """A pool on one PostgreSQL database; open with ``await Database.open(url)``."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], target: str, secrets: tuple[str, ...]):
        self._pool = pool
        self.target = target
        """The server as it may be shown: no password (``diagnose.redact``)."""
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"Database({self.target!r})"

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = 8,
        connect_timeout_s: float = 5.0,
        lock_timeout_s: float = 5.0,
        readonly: bool = False,
    ) -> Database:
        """A pool on ``url``, its schema migrated (``readonly``: checked, never changed)."""
        target, secrets = redact(url), secrets_of(url, password)
        # The password stays in asyncpg's keyword (the URL's, PGPASSFILE or ~/.pgpass when
        # None); ``lock_timeout`` bounds a write waiting for another transaction's rows, as
        # SQLite's busy timeout does.
        settings = {
            "application_name": "fc-watcher",
            "lock_timeout": f"{int(lock_timeout_s * 1000)}",
        }
        try:
            pool = await asyncpg.create_pool(
                url,
                password=password,
                # No floor: asyncpg keeps one by reconnecting in the background, and logs
                # each failed try with a traceback while the server is down.
                min_size=0,
                max_size=pool_size,
                timeout=connect_timeout_s,
                command_timeout=60.0,
                server_settings=settings,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as exc:
            raise explain(exc, target, secrets) from None
        database = cls(pool, target, secrets)
        try:
            await database.read(lambda conn: migrate(conn, target, readonly=readonly))
        except BaseException:
            await database.close()
            raise
        return database

    async def close(self) -> None:
        """Close every connection, waiting a while for calls in flight."""
        try:
            await asyncio.wait_for(self._pool.close(), timeout=_CLOSE_TIMEOUT_S)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            self._pool.terminate()

    def _explain(self, exc: BaseException) -> StateStoreError:
        if isinstance(exc, StateStoreError):
            return exc
        return explain(exc, self.target, self._secrets)

    async def read(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection (outside a transaction: each statement sees
        what was committed when it began); once more on a lost connection."""
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn:
                    return await work(conn)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                if attempt == 1 and connection_failed(exc):
                    continue
                raise self._explain(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction: all of it commits, or none."""
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn:
                    return await _transaction(conn, work)
            except _NotBegun as exc:
                if attempt == 1 and connection_failed(exc.cause):
                    continue
                raise self._explain(exc.cause) from None
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise self._explain(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover


async def _transaction(conn: Conn, work: Callable[[Conn], Awaitable[T]]) -> T:
    transaction = conn.transaction()
    try:
        await transaction.start()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise _NotBegun(exc) from None
    try:
        result = await work(conn)
    except BaseException:
        # A failed ROLLBACK (the connection is gone) must never hide the first error; the
        # pool discards a broken connection on release.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await transaction.rollback()
        raise
    await transaction.commit()
    return result
