"""Sources of tracked invocations: who says what the scheduler polls.

The scheduler polls the union of what its sources track. Each source adds and removes only its
own members, so an invocation that two sources track (listed in the config and found by
discovery, say) stays tracked until both let it go, and a reload, which changes only the config
source's members, never forgets what another source found. The config's list of ids is the
first source; discovery, live tracking and replica leases are the next ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from watcher.config.models import Tracked
from watcher.core.model import Snapshot


class Membership(Protocol):
    """What a source feeds: the scheduler's tracked set, per source."""

    def track(
        self,
        source: str,
        items: Iterable[Tracked],
        snapshots: Mapping[str, Snapshot],
        *,
        spread: bool = True,
    ) -> None:
        """``source`` wants these polled (or updates their labels and stuck settings)."""
        ...

    def untrack(self, source: str, keys: Iterable[str]) -> None:
        """``source`` no longer wants these; each is dropped once no source wants it."""
        ...


class TrackedSource(Protocol):
    """Something that decides, over time, which invocations are tracked."""

    name: str

    def members(self) -> Sequence[Tracked]:
        """What this source tracks now."""
        ...


class ConfigSource:
    """The invocations the YAML lists (``invocations`` and ``invocations_file``)."""

    name = "config"

    def __init__(self, tracked: Sequence[Tracked]) -> None:
        self._tracked = tuple(tracked)

    def members(self) -> Sequence[Tracked]:
        return self._tracked

    def attach(self, membership: Membership, snapshots: Mapping[str, Snapshot]) -> None:
        """Hand the first members over at start-up (their first polls are spread later)."""
        membership.track(self.name, self._tracked, snapshots, spread=False)

    def replace(
        self,
        tracked: Sequence[Tracked],
        membership: Membership,
        snapshots: Mapping[str, Snapshot],
    ) -> None:
        """A reload: track what the new config lists, untrack what it no longer lists."""
        wanted = {item.ref.key for item in tracked}
        gone = [item.ref.key for item in self._tracked if item.ref.key not in wanted]
        membership.untrack(self.name, gone)
        membership.track(self.name, tracked, snapshots)
        self._tracked = tuple(tracked)
