"""Opening the SQLite file: the daemon's lock file, the pragmas, and the one way to write.

Every sqlite3 error leaves this package as a ``StateStoreError`` that names the file, the
cause, the fix and the kind of failure (``explain``, from ``diagnose``), and every write goes
through ``write_transaction``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from watcher.store.errors import FailureKind, StateStoreError
from watcher.store.sqlite.diagnose import classify, explain
from watcher.store.sqlite.schema import migrate

__all__ = ["connect", "explain", "read", "take_lock", "write_transaction"]

T = TypeVar("T")


def write_transaction(db: sqlite3.Connection, path: Path, work: Callable[[], T]) -> T:
    """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: all of it commits, or none.

    ROLLBACK only when a transaction is open, and a failed ROLLBACK is ignored: SQLite may
    already have rolled back on its own (a full disk does), and its "cannot rollback - no
    transaction is active" must never hide the error that caused it.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise explain(path, exc) from None
    return result


def read(path: Path, work: Callable[[], T]) -> T:
    """Run a read, turning sqlite3 errors into one clear ``StateStoreError``."""
    try:
        return work()
    except sqlite3.Error as exc:
        raise explain(path, exc) from None


def take_lock(path: Path) -> IO[str]:
    """Hold ``<path>.lock`` exclusively: a second daemon on the same state is refused."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    except OSError as exc:
        raise StateStoreError(
            f"cannot create {lock_path} ({exc.strerror}); check that {path.parent} exists "
            "and is writable",
            classify(path, exc),
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateStoreError(
            f"state DB {path} is in use by another fc-watcher; stop it first, or give "
            "this one another state.path",
            FailureKind.LOCKED,
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except OSError as exc:  # ENOSPC: a full disk says so, as SQLITE_FULL does
        with contextlib.suppress(OSError):  # closing flushes again, and fails again
            handle.close()
        raise explain(path, exc) from None
    return handle


def connect(path: Path, *, readonly: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """A migrated connection to ``path``; the caller holds the lock if it needs one."""
    db: sqlite3.Connection | None = None
    try:
        if readonly:
            db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s, isolation_level=None
            )
        else:
            db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash (kill -9); only power loss may lose
            # the last commits, which then are simply polled again.
            db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        migrate(db, path, readonly=readonly)
        return db
    except BaseException as exc:
        if db is not None:
            db.close()
        if isinstance(exc, sqlite3.Error):
            raise explain(path, exc) from None
        raise


def run_many(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``executemany``, its cursor closed here: a cursor handed back to the event loop's thread
    would be freed there while the worker uses the connection (SQLITE_MISUSE)."""
    db.executemany(sql, rows).close()
