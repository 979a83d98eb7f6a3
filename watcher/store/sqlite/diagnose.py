"""What a failed SQLite call (or file write) means: one ``FailureKind`` and one line that says it.

The kind comes from SQLite's result code, never from the message text alone: a full disk is
``SQLITE_FULL`` (or ``ENOSPC`` from our own lock file), a read-only file ``SQLITE_READONLY``.
Some failures reach SQLite only as a bare ``SQLITE_IOERR`` (a failed fsync, a file made
immutable under a running daemon); for those the filesystem is asked: almost no free space
means a full disk, a file or directory that ``access(2)`` will not let us write means a
read-only state DB, anything else is an I/O error. The line says what, where and how to fix.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from watcher.store.errors import FailureKind, StateStoreError

NEARLY_FULL_BYTES = 64 * 1024
"""Less free space than this, and an I/O error is taken to be the disk filling up: SQLite
needs a few pages for a commit, and an fsync or a WAL index that cannot grow fails bare."""

_BY_CODE = {
    sqlite3.SQLITE_FULL: FailureKind.DISK_FULL,
    sqlite3.SQLITE_READONLY: FailureKind.READ_ONLY,
    sqlite3.SQLITE_CORRUPT: FailureKind.CORRUPT,
    sqlite3.SQLITE_NOTADB: FailureKind.CORRUPT,
    sqlite3.SQLITE_BUSY: FailureKind.LOCKED,
    sqlite3.SQLITE_LOCKED: FailureKind.LOCKED,
}
_BY_ERRNO = {
    errno.ENOSPC: FailureKind.DISK_FULL,
    errno.EDQUOT: FailureKind.DISK_FULL,
    errno.EROFS: FailureKind.READ_ONLY,
    errno.EACCES: FailureKind.READ_ONLY,
    errno.EPERM: FailureKind.READ_ONLY,
    errno.EIO: FailureKind.IO_ERROR,
}


def classify(path: Path, exc: sqlite3.Error | OSError) -> FailureKind:
    """The kind of ``exc``, a failure on the state DB at ``path``."""
    if isinstance(exc, OSError):
        return _BY_ERRNO.get(exc.errno or 0, FailureKind.OTHER)
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # raised by the sqlite3 module itself, not by SQLite
        return FailureKind.OTHER
    if code & 0xFF == sqlite3.SQLITE_IOERR:
        return _io_kind(path)
    if code & 0xFF == sqlite3.SQLITE_CANTOPEN:  # a missing directory, or a read-only one
        unwritable = path.parent.is_dir() and not os.access(path.parent, os.W_OK)
        return FailureKind.READ_ONLY if unwritable else FailureKind.OTHER
    return _BY_CODE.get(code & 0xFF, FailureKind.OTHER)


def _io_kind(path: Path) -> FailureKind:
    try:
        stats = os.statvfs(path.parent)
        if stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES:
            return FailureKind.DISK_FULL
    except OSError:
        pass
    for candidate in (path, path.with_name(path.name + "-wal"), path.parent):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            return FailureKind.READ_ONLY
    return FailureKind.IO_ERROR


def explain(path: Path, exc: sqlite3.Error | OSError) -> StateStoreError:
    """One clear line for a failure on the state DB: what, where, how to fix; and its kind."""
    kind = classify(path, exc)
    text = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    name = getattr(exc, "sqlite_errorname", None)
    if name and kind is not FailureKind.LOCKED:
        text = f"{text}, {name}"
    return StateStoreError(_message(path, kind, text, exc), kind)


def _message(path: Path, kind: FailureKind, text: str, exc: sqlite3.Error | OSError) -> str:
    if kind is FailureKind.LOCKED:
        return (
            f"state DB {path} is locked by another process; stop it, or point state.path "
            "at another file"
        )
    if kind is FailureKind.CORRUPT:
        return corrupt_message(path, text)
    if kind is FailureKind.DISK_FULL:
        return (
            f"state DB {path}: disk full ({text}); free space on its filesystem: fc-watcher "
            "retries, and nothing committed is lost"
        )
    if kind is FailureKind.READ_ONLY:
        return (
            f"state DB {path} is read-only ({text}); make it, its -wal file and {path.parent} "
            "writable by this user (file modes, chattr -i, the mount)"
        )
    if kind is FailureKind.IO_ERROR:
        return f"state DB {path}: I/O error ({text}); check the disk and the kernel log"
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_CANTOPEN:
        return (
            f"cannot open state DB {path} for writing ({text}); check the directory exists "
            "and is writable by this user"
        )
    return f"state DB {path}: {text}"


def corrupt_message(path: Path, problem: str) -> str:
    """A corrupt state DB: move it aside (with its WAL, which would be replayed into a new
    file of the same name) and a new one is started."""
    problem = " ".join(problem.split())  # quick_check's report spans lines; this is one
    return (
        f"state DB {path} is not a usable SQLite database: corrupt ({problem}); stop fc-watcher "
        f"and move it aside with its {path.name}-wal and {path.name}-shm files (nothing is "
        "deleted): fc-watcher then starts a new one"
    )
