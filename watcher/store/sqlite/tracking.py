"""What is tracked besides the config, in SQL: live ids and discover watermarks.

A live id is one row of ``live``, kept after its removal (``removed = 1``) so that a daemon
asking for the changes after revision N hears of the removal too. Every write transaction that
changes something takes the next number of ``live_revision`` and stamps it on each row it
changed: a daemon reads ``rev > N`` by index, so asking costs one lookup when nothing changed.
Writers are serialised by SQLite (``BEGIN IMMEDIATE``), so revisions commit in order and a
reader never sees revision N+1 before N.

``TrackingMethods`` gives ``SqliteStore`` the ``TrackingStore`` protocol over these functions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

from watcher.core.invocation import Api, FunctionRef, InvalidIdentifierError, InvocationRef
from watcher.core.model import Snapshot
from watcher.store.records import LiveChange, LiveItem
from watcher.store.rows import snapshot_of_row
from watcher.store.sqlite.connection import run_many
from watcher.store.sqlite.hops import Hops

T = TypeVar("T")
_CHUNK = 500  # well under SQLite's bound on parameters


def _labels_json(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


class _Revision:
    """The next revision, taken from the counter only if the transaction changes a row."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._rev: int | None = None

    def take(self) -> int:
        if self._rev is None:
            self._db.execute("UPDATE live_revision SET rev = rev + 1")
            self._rev = int(self._db.execute("SELECT rev FROM live_revision").fetchone()[0])
        return self._rev


def track_live(db: sqlite3.Connection, items: Sequence[LiveItem], now_ms: int) -> int:
    """Register ``items``; return how many were not live before. One already live keeps its
    row, and gets a new revision only if its labels changed."""
    revision = _Revision(db)
    new = 0
    for item in items:
        ref, labels = item.ref, _labels_json(item.labels)
        row = db.execute("SELECT removed, labels FROM live WHERE key = ?", (ref.key,)).fetchone()
        if row is not None and not row[0]:
            if row[1] != labels:
                db.execute(
                    "UPDATE live SET labels = ?, changed_ms = ?, rev = ? WHERE key = ?",
                    (labels, now_ms, revision.take(), ref.key),
                )
            continue
        fn = ref.function_ref
        identity = (fn.api.value, fn.service, fn.function, fn.qualifier, ref.invocation_id)
        db.execute(
            "INSERT INTO live (key, api, service, function, qualifier, invocation_id, labels, "
            "added_ms, changed_ms, rev, removed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) "
            "ON CONFLICT (key) DO UPDATE SET labels = excluded.labels, added_ms = "
            "excluded.added_ms, changed_ms = excluded.changed_ms, rev = excluded.rev, removed = 0",
            (ref.key, *identity, labels, now_ms, now_ms, revision.take()),
        )
        new += 1
    return new


def untrack_live(db: sqlite3.Connection, refs: Sequence[InvocationRef], now_ms: int) -> int:
    """Mark ``refs`` removed; return how many were live."""
    revision = _Revision(db)
    gone = 0
    for ref in refs:
        row = db.execute("SELECT removed FROM live WHERE key = ?", (ref.key,)).fetchone()
        if row is None or row[0]:
            continue
        db.execute(
            "UPDATE live SET removed = 1, changed_ms = ?, rev = ? WHERE key = ?",
            (now_ms, revision.take(), ref.key),
        )
        gone += 1
    return gone


_LIVE_COLUMNS = "api, service, function, qualifier, invocation_id, labels, removed, rev"


def live_changes(db: sqlite3.Connection, after_rev: int) -> tuple[int, list[LiveChange]]:
    """Changes after ``after_rev`` in revision order (0: every live id, removals left out),
    and the revision to ask from next time."""
    if after_rev <= 0:
        # The counter first: a change committed between the two reads has a higher revision,
        # so the next ask finds it (it is not lost, at most applied twice, which is harmless).
        current = int(db.execute("SELECT rev FROM live_revision").fetchone()[0])
        rows = db.execute(
            f"SELECT {_LIVE_COLUMNS} FROM live WHERE removed = 0 AND rev <= ?",  # noqa: S608
            (current,),
        ).fetchall()
    else:
        rows = db.execute(
            f"SELECT {_LIVE_COLUMNS} FROM live WHERE rev > ? ORDER BY rev",  # noqa: S608
            (after_rev,),
        ).fetchall()
        current = int(rows[-1][7]) if rows else after_rev
    changes = []
    for api, service, function, qualifier, invocation_id, labels, removed, _ in rows:
        try:
            ref = InvocationRef(FunctionRef(Api(api), function, service, qualifier), invocation_id)
        except (InvalidIdentifierError, ValueError):
            # Only a hand-edited row can be invalid (every writer validates): skipping it keeps
            # the other live ids tracked rather than failing every ask.
            continue
        changes.append(LiveChange(ref, not removed, json.loads(labels) if not removed else {}))
    return current, changes


def snapshots_of(db: sqlite3.Connection, keys: Collection[str]) -> dict[str, Snapshot]:
    """The stored snapshots of ``keys`` (those that have one), by key."""
    wanted = list(keys)
    found: dict[str, Snapshot] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = db.execute(
            f"SELECT * FROM invocations WHERE key IN ({', '.join('?' * len(chunk))})",  # noqa: S608
            chunk,
        )
        found.update((row["key"], snapshot_of_row(row)) for row in rows)
    return found


def load_watermarks(db: sqlite3.Connection) -> dict[str, int]:
    return {entry: int(ms) for entry, ms in db.execute("SELECT entry, started_ms FROM watermarks")}


SAVE_WATERMARK = (
    "INSERT INTO watermarks (entry, started_ms, updated_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (entry) DO UPDATE SET started_ms = excluded.started_ms, "
    "updated_ms = excluded.updated_ms"
)


class TrackingMethods:
    """The ``TrackingStore`` protocol, for ``SqliteStore`` (a mixin: its hops, its thread)."""

    async def track_live(self: Hops, items: Sequence[LiveItem], now_ms: int) -> int:
        """Register ``items`` (idempotent); return how many were not live-tracked before."""
        db = self._db
        return await self._write(
            lambda: track_live(db, items, now_ms), outbox_changed=False, name="track_live"
        )

    async def untrack_live(self: Hops, refs: Sequence[InvocationRef], now_ms: int) -> int:
        """Unregister ``refs``; return how many were live-tracked."""
        db = self._db
        return await self._write(
            lambda: untrack_live(db, refs, now_ms), outbox_changed=False, name="untrack_live"
        )

    async def live_changes(self: Hops, after_rev: int) -> tuple[int, list[LiveChange]]:
        """Every change after revision ``after_rev`` (0: all live ids now), and where to ask
        from next time: one index lookup when nothing changed."""
        db = self._db
        return await self._read(lambda: live_changes(db, after_rev))

    async def load_snapshots_of(self: Hops, keys: Collection[str]) -> dict[str, Snapshot]:
        """The stored snapshots of ``keys`` only: a live id registered per submission must not
        cost a read of every snapshot."""
        db = self._db
        return await self._read(lambda: snapshots_of(db, keys))

    async def load_watermarks(self: Hops) -> dict[str, int]:
        """Each discover entry's watermark (FC start time, ms)."""
        db = self._db
        return await self._read(lambda: load_watermarks(db))

    async def save_watermark(self: Hops, entry: str, started_ms: int, now_ms: int) -> None:
        """Record how far ``entry``'s scans have covered."""
        db = self._db
        await self._write(
            lambda: run_many(db, SAVE_WATERMARK, [(entry, started_ms, now_ms)]),
            outbox_changed=False,
            name="save_watermark",
        )

    async def save_daemon_info(self: Hops, values: Mapping[str, str], now_ms: int) -> None:
        """What the running daemon says of itself, for ``status`` (replaced key by key)."""
        db = self._db
        rows = [(key, value, now_ms) for key, value in values.items()]
        await self._write(
            lambda: run_many(db, SAVE_DAEMON_INFO, rows),
            outbox_changed=False,
            name="save_daemon_info",
        )


SAVE_DAEMON_INFO = (
    "INSERT INTO daemon_info (key, value, updated_ms) VALUES (?, ?, ?) ON CONFLICT (key) "
    "DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms"
)
