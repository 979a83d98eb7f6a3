"""Silences in SQL: one row each (schema version 7), kept after it ends so that ``silence
list --all`` and the status page can show what was silenced and by whom.

Each write that changes a silence stamps it with the next number of the ``live_revision``
counter, the one live tracking uses: a daemon asks for ``rev > N`` by index, so its refresh
costs one lookup when nothing changed. Sharing the counter (rather than ``MAX(rev) + 1``) means
pruning an old silence can never hand its revision out again, and writers are serialised by
SQLite (``BEGIN IMMEDIATE``), so revisions commit in order. Gaps are harmless.

``SilenceMethods`` gives ``SqliteStore`` the ``SilenceStore`` protocol over these functions.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from watcher.core.route import RouteMatch
from watcher.core.silence import Silence, SilenceSpec, matchers_json
from watcher.store.records import SilenceExpiry
from watcher.store.sqlite.hops import Hops

T = TypeVar("T")
_COLUMNS = "id, matchers, starts_ms, ends_ms, comment, author, created_ms, expired_ms, rev"
# Ended: past its end, or expired (an expiry is always "now", never in the future).
_NOT_ENDED_BY = "ends_ms > ? AND (expired_ms = 0 OR expired_ms > ?)"


def _next_rev(db: sqlite3.Connection) -> int:
    db.execute("UPDATE live_revision SET rev = rev + 1")
    return int(db.execute("SELECT rev FROM live_revision").fetchone()[0])


def silence_of_row(row: Sequence[Any]) -> Silence | None:
    """One ``silences`` row; None for one whose matchers do not parse (only a hand-edited row
    can be so: skipping it keeps every other silence working)."""
    sid, matchers, starts_ms, ends_ms, comment, author, created_ms, expired_ms = row[:8]
    try:
        match = RouteMatch.model_validate(json.loads(matchers))
    except (ValueError, ValidationError):
        return None
    return Silence(sid, match, starts_ms, ends_ms, comment, author, created_ms, expired_ms)


def add_silence(db: sqlite3.Connection, spec: SilenceSpec, now_ms: int) -> Silence:
    """Record ``spec`` under a new id: 12 hex digits (48 random bits), short enough to type;
    the rare clash with an existing id is drawn again."""
    matchers = json.dumps(matchers_json(spec.match), separators=(",", ":"), sort_keys=True)
    rev = _next_rev(db)
    while True:
        silence_id = secrets.token_hex(6)
        cursor = db.execute(
            f"INSERT OR IGNORE INTO silences ({_COLUMNS}) "  # noqa: S608 (names are ours)
            "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (silence_id, matchers, spec.starts_ms, spec.ends_ms, spec.comment, spec.author,
             now_ms, rev),
        )  # fmt: skip
        if cursor.rowcount == 1:
            break
    return Silence(
        silence_id, spec.match, spec.starts_ms, spec.ends_ms, spec.comment, spec.author, now_ms
    )


def _one(db: sqlite3.Connection, silence_id: str) -> Silence | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM silences WHERE id = ?",  # noqa: S608
        (silence_id,),
    ).fetchone()
    return None if row is None else silence_of_row(row)


def expire_silence(db: sqlite3.Connection, silence_id: str, now_ms: int) -> SilenceExpiry:
    """End the silence now (one not started yet never starts); one already ended is left as
    it is."""
    cursor = db.execute(
        f"UPDATE silences SET expired_ms = ?, rev = ? WHERE id = ? AND {_NOT_ENDED_BY}",  # noqa: S608
        (now_ms, _next_rev(db), silence_id, now_ms, now_ms),
    )
    return SilenceExpiry(_one(db, silence_id), cursor.rowcount == 1)


def list_silences(db: sqlite3.Connection, ended_after_ms: int) -> list[Silence]:
    """Silences not ended by ``ended_after_ms`` (those to come included), by start, then id."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM silences WHERE {_NOT_ENDED_BY} "  # noqa: S608
        "ORDER BY starts_ms, id",
        (ended_after_ms, ended_after_ms),
    )
    return [s for s in (silence_of_row(row) for row in rows) if s is not None]


def silence_changes(
    db: sqlite3.Connection, after_rev: int, now_ms: int
) -> tuple[int, list[Silence]]:
    """Silences changed after ``after_rev`` in revision order (0: every one not ended by
    ``now_ms``), and the revision to ask from next time."""
    if after_rev <= 0:
        # The counter first: a change committed between the two reads has a higher revision,
        # so the next ask finds it (at most applied twice, which is harmless).
        current = int(db.execute("SELECT rev FROM live_revision").fetchone()[0])
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM silences WHERE {_NOT_ENDED_BY} AND rev <= ?",  # noqa: S608
            (now_ms, now_ms, current),
        ).fetchall()
    else:
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM silences WHERE rev > ? ORDER BY rev",  # noqa: S608
            (after_rev,),
        ).fetchall()
        current = int(rows[-1][8]) if rows else after_rev
    found = (silence_of_row(row) for row in rows)
    return current, [s for s in found if s is not None]


PRUNE_SILENCES = "DELETE FROM silences WHERE ends_ms < ? OR (expired_ms != 0 AND expired_ms < ?)"
"""Silences that ended before retention's cut: every daemon has long let them go."""


class SilenceMethods:
    """The ``SilenceStore`` protocol, for ``SqliteStore`` (a mixin: its hops, its thread)."""

    async def add_silence(self: Hops, spec: SilenceSpec, now_ms: int) -> Silence:
        """Record a checked silence; return it with its new id."""
        db = self._db
        return await self._write(
            lambda: add_silence(db, spec, now_ms), outbox_changed=False, name="add_silence"
        )

    async def expire_silence(self: Hops, silence_id: str, now_ms: int) -> SilenceExpiry:
        """End a silence now; whether there is one with that id, and whether it was running."""
        db = self._db
        return await self._write(
            lambda: expire_silence(db, silence_id, now_ms),
            outbox_changed=False,
            name="expire_silence",
        )

    async def list_silences(self: Hops, *, ended_after_ms: int) -> list[Silence]:
        """Silences not ended by ``ended_after_ms``: now for the active (and coming) ones,
        earlier to include the recently ended."""
        db = self._db
        return await self._read(lambda: list_silences(db, ended_after_ms))

    async def silence_changes(self: Hops, after_rev: int, now_ms: int) -> tuple[int, list[Silence]]:
        """Every silence changed after revision ``after_rev`` (0: all not ended by ``now_ms``),
        and where to ask from next time: one index lookup when nothing changed."""
        db = self._db
        return await self._read(lambda: silence_changes(db, after_rev, now_ms))
