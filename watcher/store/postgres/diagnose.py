"""What a failed PostgreSQL call means: one ``FailureKind`` and one line that says it, and
never the password.

The kind comes from the SQLSTATE (or, for a connection that never was or is gone, from the
exception's class), never from the message text. asyncpg's errors can carry the DSN, and a
server's message can quote a value, so every line is scrubbed of the password (raw and
percent-encoded) and of the URL itself before it leaves this package, and the server is named
by ``redact``: user, host, port and database, nothing from the query string.
"""

from __future__ import annotations

import urllib.parse

import asyncpg

from watcher.store.errors import FailureKind, StateStoreError


def _connection_kind() -> FailureKind:
    # store/errors.py gains CONNECTION_LOST ("connection_lost") with this backend; until it
    # has, a lost connection counts as an I/O error, the nearest SQLite kind.
    try:
        return FailureKind("connection_lost")
    except ValueError:
        return FailureKind.IO_ERROR


CONNECTION_LOST = _connection_kind()

# By SQLSTATE.
_BY_STATE = {
    # Connection failures (class 08; 57P01-57P03, the server stopping, crashed or starting;
    # 53300, too many connections) are ``connection_failed``'s.
    "53100": FailureKind.DISK_FULL,
    "25006": FailureKind.READ_ONLY,  # read-only transaction: a standby, or read-only default
    "42501": FailureKind.READ_ONLY,  # insufficient privilege: the role may not write
    "40P01": FailureKind.LOCKED,  # deadlock detected
    "40001": FailureKind.LOCKED,  # serialization failure
    "55P03": FailureKind.LOCKED,  # lock not available (lock_timeout)
    "XX001": FailureKind.CORRUPT,  # data corrupted
    "XX002": FailureKind.CORRUPT,  # index corrupted
    "58030": FailureKind.IO_ERROR,
}

_RECONNECTS = (
    "check that it runs and state.url's host and port; a running fc-watcher reconnects and "
    "retries, and loses nothing"
)
_FIXES = {
    FailureKind.DISK_FULL: "free space on the server: fc-watcher retries, nothing is lost",
    FailureKind.READ_ONLY: "point state.url at the primary, or grant this role write access",
    FailureKind.LOCKED: "another transaction held the rows; fc-watcher retries",
    FailureKind.CORRUPT: "check the server's log and restore from a backup",
    FailureKind.IO_ERROR: "check the server's disk and log",
}
_AUTH_FIX = "check the user and password (state.url, its password file, or PGPASSFILE)"
_BY_STATE_FIX = {
    "28P01": _AUTH_FIX,
    "28000": _AUTH_FIX,
    "3D000": "create the database first (CREATE DATABASE), or fix the name in state.url",
}


def redact(url: str) -> str:
    """``url`` as it may be shown: scheme, user, host, port and database; no password, no
    query string (it may hold one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        host = parts.hostname or ""
    except ValueError:
        return "PostgreSQL (state.url does not parse as a URL)"
    return f"{parts.scheme or 'postgresql'}://{user}{host}{port}{parts.path}"


def secrets_of(url: str, password: str | None) -> tuple[str, ...]:
    """What must never be shown: the URL, its password (raw and as written) and ``password``."""
    found = {url, password or ""}
    try:
        written = urllib.parse.urlsplit(url).password
    except ValueError:
        written = None
    if written:
        found |= {written, urllib.parse.unquote(written)}
    # Longest first, so a password inside the URL never leaves half the URL behind.
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` on one line, every secret replaced, at most 300 characters."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:299] + "…"


_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def connection_failed(exc: BaseException) -> bool:
    """Whether ``exc`` means the server could not be reached or the connection was lost."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        return state.startswith("08") or state in _CONNECTION_STATES
    # OSError covers refused, reset, unreachable, DNS and (since 3.11) timeouts.
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def classify(exc: BaseException) -> FailureKind:
    """The kind of ``exc``, a failure talking to PostgreSQL."""
    if connection_failed(exc):
        return CONNECTION_LOST
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        return _BY_STATE.get(state, FailureKind.OTHER)
    return FailureKind.OTHER


def explain(exc: BaseException, target: str, secrets: tuple[str, ...]) -> StateStoreError:
    """One line for a failure on the PostgreSQL state at ``target`` (already redacted): what,
    the server's words (scrubbed), how to fix; and its kind."""
    kind, lost = classify(exc), connection_failed(exc)
    detail = scrub(str(exc) or type(exc).__name__, secrets)
    state = getattr(exc, "sqlstate", None)
    fix = _RECONNECTS if lost else _BY_STATE_FIX.get(state or "") or _FIXES.get(kind, "")
    if lost:
        what = "cannot reach PostgreSQL"
    elif kind is FailureKind.OTHER:
        what = "error"
    else:
        what = kind.phrase
    line = f"state DB {target}: {what} ({detail})"
    return StateStoreError(f"{line}; {fix}" if fix else line, kind)
