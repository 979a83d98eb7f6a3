"""Live tracking: ids registered at run time (``fc-watcher track``, ``POST /api/v1/track``).

The state DB is the channel: a registration is a durable row (``TrackingStore``) before it
is anything else, so a restart or a SIGKILL forgets none, and the CLI needs no connection to the
daemon. ``LiveTracking`` is the scheduler's source named "live": at start it takes every live
id, then every half second it asks what changed after the revision it has seen (one index
lookup when nothing did), and the HTTP API asks at once after its write, so a producer that
registers an id just after submitting it has it polled in the next cycle.

``track_request`` validates what the CLI and the API are given, in one place, with messages
that name the offending field (as each caller spells it) and id.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from watcher.config.models import PollSettings, Tracked
from watcher.core.invocation import (
    Api,
    FunctionRef,
    InvalidIdentifierError,
    InvocationRef,
    validate_identifier,
)
from watcher.core.model import Snapshot
from watcher.daemon.following import Follower
from watcher.engine.sources import Membership
from watcher.store.protocols import TrackingStore
from watcher.store.records import LiveChange, LiveItem

_log = structlog.get_logger("watcher.live")

SOURCE = "live"
REFRESH_EVERY_S = 0.5


class LiveStore(TrackingStore, Protocol):
    """The tracking store, plus the snapshots of a few keys (not of all of them)."""

    async def load_snapshots_of(self, keys: Collection[str]) -> dict[str, Snapshot]: ...


class LiveTracking(Follower):
    """Feeds the live ids of the state DB to the scheduler, and keeps feeding their changes."""

    name = SOURCE

    def __init__(
        self,
        store: LiveStore,
        membership: Membership,
        *,
        poll: Callable[[], PollSettings],
        every_s: float = REFRESH_EVERY_S,
    ) -> None:
        self._store = store
        self._membership = membership
        self._poll = poll
        super().__init__("live_tracking", every_s)
        self._items: dict[str, Tracked] = {}

    def __repr__(self) -> str:
        return f"LiveTracking(live={len(self._items)}, rev={self._rev})"

    def members(self) -> Sequence[Tracked]:
        """What is live-tracked now (``watcher.engine.sources.TrackedSource``)."""
        return tuple(self._items.values())

    async def start(self) -> None:
        """Take every live id (the daemon's start, and ``once``); raises ``StateStoreError``."""
        await self._refresh()

    def resettle(self, snapshots: Mapping[str, Snapshot]) -> None:
        """A reload: the live ids take the new poll settings (stuck limits)."""
        settings = self._poll()
        self._items = {
            key: Tracked(item.ref, item.labels, settings.stuck_after_s, settings.stuck_repeat_s)
            for key, item in self._items.items()
        }
        self._membership.track(SOURCE, self._items.values(), snapshots, spread=False)

    async def _apply_changes(self) -> None:
        rev, changes = await self._store.live_changes(self._rev)
        if changes:
            await self._apply(changes)
        self._rev = rev

    async def _apply(self, changes: Sequence[LiveChange]) -> None:
        settings = self._poll()
        added: dict[str, Tracked] = {}
        removed: list[str] = []
        for change in changes:  # one change per key: the row as it stands now
            key = change.ref.key
            if change.tracked:
                labels = dict(change.labels)
                stuck = (settings.stuck_after_s, settings.stuck_repeat_s)
                added[key] = Tracked(change.ref, labels, *stuck)
            elif key in self._items:
                removed.append(key)
        # A key seen before (tracked by the config once, or live and then removed) has its
        # snapshot in the DB: handing it over keeps it from being reported again as new.
        fresh = [key for key in added if key not in self._items]
        snapshots = await self._store.load_snapshots_of(fresh) if fresh else {}
        for key in removed:
            del self._items[key]
        self._items.update(added)
        self._membership.untrack(SOURCE, removed)
        # Not spread: a producer registers an id to have it polled now, not within an interval.
        self._membership.track(SOURCE, added.values(), snapshots, spread=False)
        if added or removed:
            _log.info("live_tracked", added=len(added), removed=len(removed), live=len(self._items))


class TrackRequestError(ValueError):
    """A track or untrack request that cannot be applied; the message says which part."""


JSON_NAMES: Mapping[str, str] = {
    "api": '"api"',
    "service": '"service"',
    "function": '"function"',
    "ids": '"invocationIds"',
    "labels": '"labels"',
    "fc3": '"api": "fc3"',
}
"""How the HTTP API's messages name the fields; the CLI passes its flags instead."""


@dataclass(frozen=True, slots=True)
class TrackRequest:
    """Validated ids of one function, with the labels they are tracked under."""

    function_ref: FunctionRef
    refs: tuple[InvocationRef, ...]
    labels: Mapping[str, str] = field(default_factory=dict)

    def items(self) -> list[LiveItem]:
        return [LiveItem(ref, self.labels) for ref in self.refs]

    def function_name(self) -> str:
        """``service/function`` (FC 2.0) or ``function`` (FC 3.0), ``/qualifier`` if any."""
        fn = self.function_ref
        return "/".join(part for part in (fn.service, fn.function, fn.qualifier) if part)


def track_request(
    *,
    api: object,
    service: object,
    function: object,
    qualifier: object,
    ids: object,
    labels: object,
    names: Mapping[str, str] = JSON_NAMES,
) -> TrackRequest:
    """Check a request field by field; raise ``TrackRequestError`` with one line naming the
    field (by ``names``) or the first bad id, so nothing is written unless all of it is good."""
    function_ref = _function_ref(api, service, function, qualifier, names)
    if not isinstance(ids, list | tuple) or not ids:
        raise TrackRequestError(f"no invocation ids: give at least one in {names['ids']}")
    bad = [value for value in ids if not _is_identifier(value)]
    if bad:
        more = f" ({len(bad) - 1} more invalid id(s) in the request)" if len(bad) > 1 else ""
        try:
            validate_identifier("invocation id", bad[0])
        except InvalidIdentifierError as exc:
            raise TrackRequestError(f"{exc}{more}; nothing was changed") from None
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()
    ):
        raise TrackRequestError(f"{names['labels']} must map names to string values")
    unique = dict.fromkeys(str(value) for value in ids)  # once each, in the order given
    refs = tuple(InvocationRef(function_ref, value) for value in unique)
    return TrackRequest(function_ref, refs, dict(labels))


def _is_identifier(value: object) -> bool:
    try:
        validate_identifier("invocation id", value)
    except InvalidIdentifierError:
        return False
    return True


def _function_ref(
    api: object, service: object, function: object, qualifier: object, names: Mapping[str, str]
) -> FunctionRef:
    if api not in (Api.FC2.value, Api.FC3.value):
        raise TrackRequestError(f"{names['api']} must be fc2 or fc3, not {api!r}")
    if api == Api.FC2.value and service is None:
        raise TrackRequestError(
            f"an FC 2.0 invocation needs {names['service']} (for an FC 3.0 task: "
            f"{names['fc3']}, no service)"
        )
    if api == Api.FC3.value and service is not None:
        raise TrackRequestError(f"an FC 3.0 task has no service: remove {names['service']}")
    if function is None:
        raise TrackRequestError(f"{names['function']} is required")
    try:  # each message names the bad value
        return FunctionRef(
            Api(api),
            validate_identifier("function name", function),
            None if service is None else validate_identifier("service name", service),
            None if qualifier is None else validate_identifier("qualifier", qualifier),
        )
    except InvalidIdentifierError as exc:
        raise TrackRequestError(str(exc)) from None
