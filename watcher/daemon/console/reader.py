"""The console's own read-only connection to the state DB, on one worker thread of its own.

The daemon's store has one thread that does all its writes; a page read there would queue
behind commits and delay them. So the console opens the file again, read-only (WAL lets a
reader run beside the writer and never blocks it), and uses that connection on a thread of
its own: page requests wait for each other, never for the daemon, and the event loop never
waits for SQLite. Each page is one short read transaction, so its numbers agree with each
other and the daemon's WAL checkpoints are never held back for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from watcher.store.errors import StateStoreError
from watcher.store.sqlite.connection import connect, explain

T = TypeVar("T")


class ConsoleReader:
    """Runs reads of the state DB at ``path`` on one thread, in one transaction each."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 2.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-db")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"ConsoleReader({str(self.path)!r})"

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query`` on the connection, in one read transaction, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._in_transaction, query
        )

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` (rendering a page) on the same thread, outside any transaction."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            if not self.path.exists():
                raise StateStoreError(f"state DB {self.path} does not exist yet")
            self._db = connect(self.path, readonly=True, busy_timeout_s=self._busy_timeout_s)
        return self._db

    def _in_transaction(self, query: Callable[[sqlite3.Connection], T]) -> T:
        db = self._connection()
        try:
            db.execute("BEGIN")
            try:
                return query(db)
            finally:
                db.execute("ROLLBACK")  # a read: nothing to keep, and the snapshot is let go
        except sqlite3.Error as exc:
            # The next page opens a fresh connection: one that failed may stay broken.
            self._drop()
            raise explain(self.path, exc) from None

    def _drop(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    async def close(self) -> None:
        """Close the connection and the thread; again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self.run(self._drop)
        self._executor.shutdown(wait=True)
