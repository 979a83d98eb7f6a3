"""The daemon's silences: what the poller consults at commit time, kept fresh from the state DB.

The state DB is the channel, as for live tracking: ``fc-watcher silence``, the HTTP API and the
status page all write a silence as a durable row first, so a restart forgets none and the CLI
needs no connection to the daemon. ``ActiveSilences`` takes every silence not ended at start,
then every half second asks what changed after the revision it has seen (one index lookup when
nothing did); the API and the status page ask at once after their write, so the next commit
already obeys them. The poller asks it, per commit, which transitions a silence holds back
(``hold_back``), from memory: a commit never waits for the DB on account of silences.

``silence_request`` checks an API body, with messages that name its JSON fields.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import structlog

from watcher.core.clock import Clock
from watcher.core.model import Transition
from watcher.core.route import Target
from watcher.core.silence import (
    Silence,
    SilenceError,
    SilenceSpec,
    check_silence,
    describe,
    format_ms,
    hold_back,
    matchers_json,
    parse_duration_ms,
    parse_matchers,
    parse_time_ms,
)
from watcher.daemon.following import Follower
from watcher.store.protocols import SilenceStore
from watcher.store.records import SilenceExpiry

_log = structlog.get_logger("watcher.silences")

REFRESH_EVERY_S = 0.5
RECENT_MS = 24 * 3_600_000
"""How long an ended silence is still listed (``silence list --all``, GET)."""
_KEEP_ENDED_MS = 60_000
# A transition is observed a moment before it is committed: a silence that ended in between
# must still hold it back, so an ended silence is dropped from memory only a minute later.

JSON_NAMES: Mapping[str, str] = {
    "starts": '"startsAt"',
    "ends": '"endsAt"',
    "duration": '"duration"',
    "comment": '"comment"',
    "author": '"author"',
}
"""How the API's messages name the fields; the CLI passes its flags instead."""
_FORM_NAMES = {"starts": "the start", "ends": "the end", "duration": "the duration",
               "comment": "a comment", "author": "an author"}  # fmt: skip
_FIELDS = ("matchers", "startsAt", "endsAt", "duration", "comment", "author")


class ActiveSilences(Follower):
    """The silences not ended, in memory, kept in step with the state DB."""

    def __init__(
        self,
        store: SilenceStore,
        clock: Clock,
        *,
        log_sinks: Callable[[], Collection[str]],
        every_s: float = REFRESH_EVERY_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._log_sinks = log_sinks
        """The ``log`` sinks of the config in force (a reload may change them)."""
        super().__init__("silences_refresh", every_s)
        self._silences: dict[str, Silence] = {}

    def __repr__(self) -> str:
        return f"ActiveSilences(held={len(self._silences)}, rev={self._rev})"

    # -- what the poller and the metrics read (memory only) ----------------------------------

    def hold_back(
        self, transitions: Sequence[Transition], routes: Mapping[str, Sequence[Target]]
    ) -> tuple[Mapping[str, Sequence[Target]], Mapping[str, str]]:
        """The poller's ``Silencer``: ``routes`` without the alerting targets of silenced
        transitions, and which silence holds each back."""
        if not self._silences:  # the usual case: nothing to look at
            return routes, {}
        return hold_back(transitions, routes, tuple(self._silences.values()), self._log_sinks())

    def active_count(self, now_ms: int | None = None) -> int:
        """Silences in force at ``now_ms`` (default: now)."""
        now = self._clock.wall_ms() if now_ms is None else now_ms
        return sum(silence.active_at(now) for silence in self._silences.values())

    def held(self) -> list[Silence]:
        """The silences held in memory (not ended, or ended within the last minute)."""
        return sorted(self._silences.values(), key=lambda s: (s.starts_ms, s.id))

    # -- keeping in step with the state DB ----------------------------------------------------

    async def start(self) -> None:
        """Take every silence not ended (build, so ``once`` obeys them too); raises
        ``StateStoreError``."""
        await self._refresh()

    async def _apply_changes(self) -> None:
        now_ms = self._clock.wall_ms()
        rev, changes = await self._store.silence_changes(self._rev, now_ms)
        for silence in changes:  # one change per id: the row as it stands now
            self._silences[silence.id] = silence
            _log.info(
                "silence_changed",
                silence_id=silence.id,
                state=silence.state_at(now_ms),
                matchers=matchers_json(silence.match),
                ends=format_ms(silence.ended_ms),
            )
        cut_ms = now_ms - _KEEP_ENDED_MS
        for silence_id in [k for k, s in self._silences.items() if s.ended_ms <= cut_ms]:
            del self._silences[silence_id]
        self._rev = rev

    # -- what the HTTP API and the status page do ---------------------------------------------

    async def add(self, spec: SilenceSpec) -> Silence:
        """Record ``spec``, then apply it at once: the next commit obeys it."""
        silence = await self._store.add_silence(spec, self._clock.wall_ms())
        await self.refresh()
        return silence

    async def expire(self, silence_id: str) -> SilenceExpiry:
        """End a silence now, then apply that at once."""
        expiry = await self._store.expire_silence(silence_id, self._clock.wall_ms())
        await self.refresh()
        return expiry

    async def listed(self) -> list[Silence]:
        """Silences not ended, and those ended within ``RECENT_MS``, from the state DB."""
        return await self._store.list_silences(ended_after_ms=self._clock.wall_ms() - RECENT_MS)

    async def add_silence(
        self,
        *,
        matchers: Mapping[str, Any],
        starts_ms: int,
        ends_ms: int,
        comment: str,
        author: str,
    ) -> str:
        """The status page's "add": check (``SilenceError``, one line, on a bad part), record,
        apply; the new silence's id."""
        now_ms = self._clock.wall_ms()
        spec = check_silence(
            match=parse_matchers(matcher_pairs(matchers, field="matchers")),
            window=(starts_ms, ends_ms, None),
            comment=comment,
            author=author,
            now_ms=now_ms,
            names=_FORM_NAMES,
        )
        return (await self.add(spec)).id

    async def expire_silence(self, silence_id: str) -> bool:
        """The status page's "expire": False when no silence with that id is still running."""
        return (await self.expire(silence_id)).expired


def silence_json(silence: Silence, now_ms: int) -> dict[str, Any]:
    """A silence as the API and ``silence list --json`` show it."""
    return {
        "id": silence.id,
        "state": silence.state_at(now_ms),
        "matchers": matchers_json(silence.match),
        "startsAt": format_ms(silence.starts_ms),
        "endsAt": format_ms(silence.ends_ms),
        "expiredAt": format_ms(silence.expired_ms) if silence.expired_ms else None,
        "comment": silence.comment,
        "author": silence.author,
        "createdAt": format_ms(silence.created_ms),
    }


def matcher_pairs(matchers: object, *, field: str = '"matchers"') -> list[tuple[str, object]]:
    """(name, value) pairs of an object (``{"function": "x"}``) or a list (``["function=x"]``
    or ``[{"name": "function", "value": "x"}]``), for ``parse_matchers``."""
    if isinstance(matchers, Mapping):
        return [(str(name), value) for name, value in matchers.items()]
    if not isinstance(matchers, list | tuple):
        raise SilenceError(f"{field} must be an object or a list of NAME=VALUE strings")
    pairs: list[tuple[str, object]] = []
    for item in matchers:
        if isinstance(item, str):
            name, sep, value = item.partition("=")
            if not sep:
                raise SilenceError(f"{field}: {item!r} is not NAME=VALUE (e.g. function=transcode)")
            pairs.append((name.strip(), value))
        elif isinstance(item, Mapping) and set(item) == {"name", "value"}:
            pairs.append((str(item["name"]), item["value"]))
        else:
            raise SilenceError(f'{field}: each item is "NAME=VALUE" or {{"name", "value"}}')
    return pairs


def parse_window(
    starts: object, ends: object, duration: object, names: Mapping[str, str]
) -> tuple[int | None, int | None, int | None]:
    """(starts_ms, ends_ms, duration_ms) of the values given (None: not given), for
    ``check_silence``; ``names`` says how the caller spells them (keys starts, ends,
    duration)."""
    return (
        None if starts is None else parse_time_ms(starts, names["starts"]),
        None if ends is None else parse_time_ms(ends, names["ends"]),
        None if duration is None else parse_duration_ms(duration, names["duration"]),
    )


def silence_table(silences: Sequence[Silence], now_ms: int) -> list[str]:
    """Aligned lines, a header first: what ``silence list`` and ``status`` print."""
    rows = [("ID", "STATE", "STARTS", "ENDS", "MATCHERS", "AUTHOR", "COMMENT")]
    for s in silences:
        comment = " ".join(s.comment.split())  # one line, whatever was typed
        rows.append((s.id, s.state_at(now_ms), format_ms(s.starts_ms), format_ms(s.ended_ms),
                     describe(s.match), s.author, comment))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
            for row in rows]  # fmt: skip


def silence_request(document: object, now_ms: int) -> SilenceSpec:
    """An API body checked field by field; ``SilenceError`` names the first bad one."""
    if not isinstance(document, dict):
        raise SilenceError('the body must be a JSON object with "matchers" and "comment"')
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise SilenceError(f"unknown field {unknown[0]!r}; the fields: {', '.join(_FIELDS)}")
    if document.get("matchers") is None:
        raise SilenceError('"matchers" is required, e.g. {"function": "transcode"}')
    match = parse_matchers(matcher_pairs(document["matchers"]))
    window = (document.get("startsAt"), document.get("endsAt"), document.get("duration"))
    return check_silence(
        match=match,
        window=parse_window(*window, JSON_NAMES),
        comment=document.get("comment"),
        author=document.get("author", "api"),
        now_ms=now_ms,
        names=JSON_NAMES,
    )
