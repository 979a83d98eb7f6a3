"""The checks the daemon makes of its state DB before it tells systemd READY.

A daemon that says READY and then fails every commit is worse than one that does not start:
systemd, the operator and /readyz all believe it. So the daemon (the process holding the lock;
``status`` and ``redeliver`` skip this) checks, once, that the file is intact and writable,
and refuses to start otherwise, with one line saying what, where and how to fix.

Intact: ``PRAGMA quick_check`` (pages and records, not index contents: the fast one), stopped
by a progress handler after ``budget_s`` so that a start on a huge DB stays fast; a check cut
short is logged (``state_check_incomplete``) and the start goes on, since most of a large file
was seen and a bad page left unseen still fails its reads later with the same clear line.
Writable: the directory (SQLite creates its -wal and -shm files there) passes ``access(2)``,
which honours read-only mounts and immutable files even for root, and one real write commits:
the header's ``user_version`` rewritten with its own value, which appends a page to the WAL
(a file locked by another process past the busy timeout is let through: that is no defect).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import structlog

from watcher.store.errors import FailureKind, StateStoreError
from watcher.store.sqlite.connection import connect, write_transaction
from watcher.store.sqlite.diagnose import corrupt_message

_log = structlog.get_logger("watcher.store")

CHECK_BUDGET_S = 2.0
"""How long the integrity check may take at start; ample for DBs of 100,000s of invocations."""


def open_checked(
    path: Path, readonly: bool, busy_timeout_s: float, check_budget_s: float | None
) -> sqlite3.Connection:
    """``connect``, then, unless ``check_budget_s`` is None, check the file is intact (within
    that budget) and writable; raise ``StateStoreError`` (the connection closed) if not."""
    db = connect(path, readonly=readonly, busy_timeout_s=busy_timeout_s)
    try:
        if check_budget_s is not None:
            check_integrity(db, path, check_budget_s)
            check_writable(db, path)
    except BaseException:
        db.close()
        raise
    return db


def check_integrity(db: sqlite3.Connection, path: Path, budget_s: float) -> bool:
    """Run ``quick_check`` for at most ``budget_s``; True if it ran to the end."""
    deadline = time.monotonic() + budget_s
    # Every 1000 virtual-machine steps: cheap, and fine-grained enough to stop on time.
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_INTERRUPT:
            raise
        _log.warning(
            "state_check_incomplete",
            state=str(path),
            budget_s=budget_s,
            size_bytes=_size(path),
            meaning="the start goes on; a bad page left unchecked fails its reads later",
        )
        return False
    finally:
        db.set_progress_handler(None, 0)
    if problems != ["ok"]:
        raise StateStoreError(
            corrupt_message(path, "quick_check: " + "; ".join(problems)[:300]),
            FailureKind.CORRUPT,
        )
    return True


def check_writable(db: sqlite3.Connection, path: Path) -> None:
    """Raise unless the directory passes ``access(2)`` and one real write commits."""
    if not os.access(path.parent, os.W_OK):
        raise StateStoreError(
            f"state DB {path} is read-only: its directory {path.parent} is not writable "
            "(file modes, chattr -i, the mount); SQLite creates its -wal and -shm files there",
            FailureKind.READ_ONLY,
        )
    try:
        write_transaction(db, path, lambda: rewrite_header(db))
    except StateStoreError as exc:
        if exc.kind is not FailureKind.LOCKED:
            raise
        # Another process (``redeliver``) holds the write lock beyond the busy timeout: that
        # says nothing about the file, and the daemon's writes wait for it as they always do.
        _log.info("state_write_check_skipped", state=str(path), reason="locked")


def rewrite_header(db: sqlite3.Connection) -> None:
    """A real write that changes nothing: ``user_version`` set to itself rewrites page 1."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute(f"PRAGMA user_version = {version}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
