"""Opening the SQLite file: the daemon's lock file, the pragmas, and the one way to write.

Every sqlite3 error leaves this package as a ``StateStoreError`` that names the file, the
cause and the fix (``explain``), and every write goes through ``write_transaction``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from watcher.store.errors import StateStoreError
from watcher.store.sqlite.schema import migrate

T = TypeVar("T")


def explain(path: Path, exc: sqlite3.Error) -> StateStoreError:
    """One clear line for a sqlite3 error: what, where, how to fix."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StateStoreError(
            f"state DB {path} is locked by another process; stop it, or point state.path "
            "at another file"
        )
    if "not a database" in text or "malformed" in text:
        return StateStoreError(
            f"state DB {path} is not a usable SQLite database ({text}); move it aside "
            "(nothing is deleted) and fc-watcher will start a new one"
        )
    if "full" in text:
        return StateStoreError(
            f"state DB {path}: the disk is full ({text}); free space, nothing committed is lost"
        )
    if "unable to open" in text or "readonly" in text:
        return StateStoreError(
            f"cannot open state DB {path} for writing ({text}); check the directory exists "
            "and is writable by this user"
        )
    return StateStoreError(f"state DB {path}: {text}")


def write_transaction(db: sqlite3.Connection, path: Path, work: Callable[[], T]) -> T:
    """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: all of it commits, or none.

    ROLLBACK only when a transaction is open: SQLite may already have rolled back on its own
    (a full disk does), and a second error would hide the first.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
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
            "and is writable"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateStoreError(
            f"state DB {path} is in use by another fc-watcher; stop it first, or give "
            "this one another state.path"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
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
