"""Silences in PostgreSQL: one row each, kept after it ends, as in SQLite's schema version 7.

Each write that changes a silence stamps it with the next number of the ``live_revision``
counter, the one live tracking uses, after taking that row's lock (``tracking.Revision``): a
daemon asks for ``rev > N`` by index, and revisions commit in order. Gaps are harmless.

``SilenceMethods`` gives ``PostgresStore`` the ``SilenceStore`` protocol over these functions.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import ValidationError

from watcher.core.route import RouteMatch
from watcher.core.silence import Silence, SilenceSpec, matchers_json
from watcher.store.postgres.tracking import Revision
from watcher.store.postgres.writes import affected, clean
from watcher.store.records import SilenceExpiry

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")
_COLUMNS = "id, matchers, starts_ms, ends_ms, comment, author, created_ms, expired_ms, rev"
# Ended: past its end, or expired (an expiry is always "now", never in the future).
_NOT_ENDED_BY = "ends_ms > $1 AND (expired_ms = 0 OR expired_ms > $1)"


def silence_of_row(row: Any) -> Silence | None:
    """One ``silences`` row; None for one whose matchers do not parse (only a hand-edited row
    can be so: skipping it keeps every other silence working)."""
    sid, matchers, starts_ms, ends_ms, comment, author, created_ms, expired_ms = row[:8]
    try:
        match = RouteMatch.model_validate(json.loads(matchers))
    except (ValueError, ValidationError):
        return None
    return Silence(sid, match, starts_ms, ends_ms, comment, author, created_ms, expired_ms)


async def add_silence(conn: Conn, spec: SilenceSpec, now_ms: int) -> Silence:
    """Record ``spec`` under a new id: 12 hex digits (48 random bits), short enough to type;
    the rare clash with an existing id is drawn again."""
    matchers = json.dumps(matchers_json(spec.match), separators=(",", ":"), sort_keys=True)
    comment, author = clean(spec.comment), clean(spec.author)
    revision = Revision(conn)
    await revision.lock()
    rev = await revision.take()
    while True:
        silence_id = secrets.token_hex(6)
        status = await conn.execute(
            f"INSERT INTO silences ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) "  # noqa: S608
            "ON CONFLICT (id) DO NOTHING",
            silence_id, matchers, spec.starts_ms, spec.ends_ms, comment, author, now_ms, rev,
        )  # fmt: skip
        if affected(status) == 1:
            break
    return Silence(silence_id, spec.match, spec.starts_ms, spec.ends_ms, comment, author, now_ms)


async def expire_silence(conn: Conn, silence_id: str, now_ms: int) -> SilenceExpiry:
    """End the silence now (one not started yet never starts); one already ended is left as
    it is."""
    revision = Revision(conn)
    await revision.lock()
    running = await conn.fetchval(
        f"SELECT 1 FROM silences WHERE id = $2 AND {_NOT_ENDED_BY}",  # noqa: S608
        now_ms,
        silence_id,
    )
    if running:
        await conn.execute(
            "UPDATE silences SET expired_ms = $1, rev = $2 WHERE id = $3",
            now_ms,
            await revision.take(),
            silence_id,
        )
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM silences WHERE id = $1", silence_id)  # noqa: S608
    return SilenceExpiry(None if row is None else silence_of_row(row), bool(running))


async def list_silences(conn: Conn, ended_after_ms: int) -> list[Silence]:
    """Silences not ended by ``ended_after_ms`` (those to come included), by start, then id."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM silences WHERE {_NOT_ENDED_BY} ORDER BY starts_ms, id",  # noqa: S608
        ended_after_ms,
    )
    return [s for s in (silence_of_row(row) for row in rows) if s is not None]


async def silence_changes(conn: Conn, after_rev: int, now_ms: int) -> tuple[int, list[Silence]]:
    """Silences changed after ``after_rev`` in revision order (0: every one not ended by
    ``now_ms``), and the revision to ask from next time."""
    if after_rev <= 0:
        # The counter first: a change committed between the two reads has a higher revision,
        # so the next ask finds it (at most applied twice, which is harmless).
        current = int(await conn.fetchval("SELECT rev FROM live_revision"))
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM silences WHERE {_NOT_ENDED_BY} AND rev <= $2",  # noqa: S608
            now_ms,
            current,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM silences WHERE rev > $1 ORDER BY rev",  # noqa: S608
            after_rev,
        )
        current = int(rows[-1]["rev"]) if rows else after_rev
    found = (silence_of_row(row) for row in rows)
    return current, [s for s in found if s is not None]


class _Hops(Protocol):
    """What ``SilenceMethods`` needs of the store: its two hops."""

    async def _read(self, work: Callable[[Conn], Awaitable[T]]) -> T: ...

    async def _write(
        self, work: Callable[[Conn], Awaitable[T]], *, outbox_changed: bool = ..., name: str = ...
    ) -> T: ...


class SilenceMethods:
    """The ``SilenceStore`` protocol, for ``PostgresStore`` (a mixin: its pool, its hops)."""

    async def add_silence(self: _Hops, spec: SilenceSpec, now_ms: int) -> Silence:
        """Record a checked silence; return it with its new id."""
        return await self._write(
            lambda conn: add_silence(conn, spec, now_ms), outbox_changed=False, name="add_silence"
        )

    async def expire_silence(self: _Hops, silence_id: str, now_ms: int) -> SilenceExpiry:
        """End a silence now; whether there is one with that id, and whether it was running."""
        return await self._write(
            lambda conn: expire_silence(conn, silence_id, now_ms),
            outbox_changed=False,
            name="expire_silence",
        )

    async def list_silences(self: _Hops, *, ended_after_ms: int) -> list[Silence]:
        """Silences not ended by ``ended_after_ms``: now for the active (and coming) ones,
        earlier to include the recently ended."""
        return await self._read(lambda conn: list_silences(conn, ended_after_ms))

    async def silence_changes(
        self: _Hops, after_rev: int, now_ms: int
    ) -> tuple[int, list[Silence]]:
        """Every silence changed after revision ``after_rev`` (0: all not ended by ``now_ms``),
        and where to ask from next time: one index lookup when nothing changed."""
        return await self._read(lambda conn: silence_changes(conn, after_rev, now_ms))
