"""Live ids, discover watermarks and the daemon's own info in PostgreSQL, as in SQLite.

A live id is one row of ``live``, kept after its removal (``removed``) so that a daemon asking
for the changes after revision N hears of the removal too. A write takes the ``live_revision``
row's lock first (``SELECT ... FOR UPDATE``): writers of live ids and silences are then
serialised, as SQLite's ``BEGIN IMMEDIATE`` serialises them, so revisions commit in order and
a reader never sees revision N+1 before N. The counter moves only when a row changes.

``TrackingMethods`` gives ``PostgresStore`` the ``TrackingStore`` protocol over these functions.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from watcher.core.invocation import Api, FunctionRef, InvalidIdentifierError, InvocationRef
from watcher.core.model import Snapshot
from watcher.store.postgres import reads
from watcher.store.postgres.writes import clean
from watcher.store.records import LiveChange, LiveItem

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")


def _labels_json(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


class Revision:
    """The revision counter of one write transaction: locked at once, moved only if the
    transaction changes a row, then the same number for every row it changes."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._rev: int | None = None

    async def lock(self) -> None:
        await self._conn.execute("SELECT rev FROM live_revision FOR UPDATE")

    async def take(self) -> int:
        if self._rev is None:
            self._rev = int(
                await self._conn.fetchval("UPDATE live_revision SET rev = rev + 1 RETURNING rev")
            )
        return self._rev


_UPSERT_LIVE = (
    "INSERT INTO live (key, api, service, function, qualifier, invocation_id, labels, "
    "added_ms, changed_ms, rev, removed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, FALSE) "
    "ON CONFLICT (key) DO UPDATE SET labels = EXCLUDED.labels, added_ms = EXCLUDED.added_ms, "
    "changed_ms = EXCLUDED.changed_ms, rev = EXCLUDED.rev, removed = FALSE"
)


async def track_live(conn: Conn, items: Sequence[LiveItem], now_ms: int) -> int:
    """Register ``items``; return how many were not live before. One already live keeps its
    row, and gets a new revision only if its labels changed."""
    revision = Revision(conn)
    await revision.lock()
    rows = await conn.fetch(
        "SELECT key, removed, labels FROM live WHERE key = ANY($1)", [i.ref.key for i in items]
    )
    known = {row["key"]: (row["removed"], row["labels"]) for row in rows}
    new = 0
    for item in items:
        ref, labels = item.ref, _labels_json(item.labels)
        removed, stored = known.get(ref.key, (True, None))
        if not removed:
            if stored != labels:
                await conn.execute(
                    "UPDATE live SET labels = $1, changed_ms = $2, rev = $3 WHERE key = $4",
                    labels, now_ms, await revision.take(), ref.key,
                )  # fmt: skip
                known[ref.key] = (False, labels)
            continue
        fn = ref.function_ref
        identity = (fn.api.value, fn.service, fn.function, fn.qualifier, ref.invocation_id)
        rev = await revision.take()
        await conn.execute(_UPSERT_LIVE, ref.key, *identity, labels, now_ms, rev)
        known[ref.key] = (False, labels)
        new += 1
    return new


async def untrack_live(conn: Conn, refs: Sequence[InvocationRef], now_ms: int) -> int:
    """Mark ``refs`` removed; return how many were live."""
    revision = Revision(conn)
    await revision.lock()
    rows = await conn.fetch(
        "SELECT key FROM live WHERE key = ANY($1) AND NOT removed", [r.key for r in refs]
    )
    live = [row["key"] for row in rows]
    if not live:
        return 0
    await conn.execute(
        "UPDATE live SET removed = TRUE, changed_ms = $1, rev = $2 WHERE key = ANY($3)",
        now_ms, await revision.take(), live,
    )  # fmt: skip
    return len(live)


_LIVE_COLUMNS = "api, service, function, qualifier, invocation_id, labels, removed, rev"


async def live_changes(conn: Conn, after_rev: int) -> tuple[int, list[LiveChange]]:
    """Changes after ``after_rev`` in revision order (0: every live id, removals left out),
    and the revision to ask from next time."""
    if after_rev <= 0:
        # The counter first: a change committed between the two reads has a higher revision,
        # so the next ask finds it (it is not lost, at most applied twice, which is harmless).
        current = int(await conn.fetchval("SELECT rev FROM live_revision"))
        rows = await conn.fetch(
            f"SELECT {_LIVE_COLUMNS} FROM live WHERE NOT removed AND rev <= $1",  # noqa: S608
            current,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_LIVE_COLUMNS} FROM live WHERE rev > $1 ORDER BY rev",  # noqa: S608
            after_rev,
        )
        current = int(rows[-1]["rev"]) if rows else after_rev
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


SAVE_WATERMARK = (
    "INSERT INTO watermarks (entry, started_ms, updated_ms) VALUES ($1, $2, $3) "
    "ON CONFLICT (entry) DO UPDATE SET started_ms = EXCLUDED.started_ms, "
    "updated_ms = EXCLUDED.updated_ms"
)


SAVE_DAEMON_INFO = (
    "INSERT INTO daemon_info (key, value, updated_ms) SELECT i.key, i.value, $3 "
    "FROM unnest($1::text[], $2::text[]) AS i (key, value) ON CONFLICT (key) "
    "DO UPDATE SET value = EXCLUDED.value, updated_ms = EXCLUDED.updated_ms"
)


class _Hops(Protocol):
    """What ``TrackingMethods`` needs of the store: its two hops."""

    async def _read(self, work: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def _write(
        self, work: Callable[[Conn], Awaitable[T]], *, outbox_changed: bool = ..., name: str = ...
    ) -> T: ...


class TrackingMethods:
    """The ``TrackingStore`` protocol, for ``PostgresStore`` (a mixin: its pool, its hops)."""

    async def track_live(self: _Hops, items: Sequence[LiveItem], now_ms: int) -> int:
        """Register ``items`` (idempotent); return how many were not live-tracked before."""
        return await self._write(
            lambda conn: track_live(conn, items, now_ms), outbox_changed=False, name="track_live"
        )

    async def untrack_live(self: _Hops, refs: Sequence[InvocationRef], now_ms: int) -> int:
        """Unregister ``refs``; return how many were live-tracked."""
        return await self._write(
            lambda conn: untrack_live(conn, refs, now_ms),
            outbox_changed=False,
            name="untrack_live",
        )

    async def live_changes(self: _Hops, after_rev: int) -> tuple[int, list[LiveChange]]:
        """Every change after revision ``after_rev`` (0: all live ids now), and where to ask
        from next time: one index lookup when nothing changed."""
        return await self._read(lambda conn: live_changes(conn, after_rev))

    async def load_snapshots_of(self: _Hops, keys: Collection[str]) -> dict[str, Snapshot]:
        """The stored snapshots of ``keys`` only: a live id registered per submission must not
        cost a read of every snapshot."""
        return await self._read(lambda conn: reads.snapshots_of(conn, keys))

    async def load_watermarks(self: _Hops) -> dict[str, int]:
        """Each discover entry's watermark (FC start time, ms)."""
        rows = await self._read(lambda conn: conn.fetch("SELECT entry, started_ms FROM watermarks"))
        return {entry: int(ms) for entry, ms in rows}

    async def save_watermark(self: _Hops, entry: str, started_ms: int, now_ms: int) -> None:
        """Record how far ``entry``'s scans have covered."""
        await self._write(
            lambda conn: conn.execute(SAVE_WATERMARK, entry, started_ms, now_ms),
            outbox_changed=False,
            name="save_watermark",
        )

    async def save_daemon_info(self: _Hops, values: Mapping[str, str], now_ms: int) -> None:
        """What the running daemon says of itself, for ``status`` (replaced key by key)."""
        keys, texts = list(values), [clean(v) for v in values.values()]
        await self._write(
            lambda conn: conn.execute(SAVE_DAEMON_INFO, keys, texts, now_ms),
            outbox_changed=False,
            name="save_daemon_info",
        )
