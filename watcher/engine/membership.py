"""The tracked set: every tracked invocation's poll state, who tracks it, and its cap.

An invocation stays while any source (the config, discovery, live tracking) wants it. Indexed by
function, so a scan finds its function's invocations without walking the whole set. At
``max_tracked`` the set makes room by forgetting finished invocations, the longest unchanged
first; it never forgets an active one, and turns new ones away instead.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection, Iterator

import structlog

from watcher.core.invocation import FunctionRef
from watcher.core.listing import is_scan_watched
from watcher.engine.poll import PollState

_log = structlog.get_logger("watcher.tracking")

CONFIG_SOURCE = "config"
LIVE_SOURCE = "live"
DISCOVER_PREFIX = "discover:"

_EVICT_FRACTION = 0.01
"""Room made at the cap, as a share of the cap: one walk of the set per 1% of it, not per add."""


def found_by(sources: Collection[str]) -> str:
    """How an invocation was found, for the metric: named in the config first, then live."""
    if CONFIG_SOURCE in sources:
        return "listed"
    if LIVE_SOURCE in sources:
        return "live"
    return "discovered"


class TrackedSet:
    """Poll states by key, their owners, and an index by function."""

    def __init__(self, max_tracked: int) -> None:
        self.max_tracked = max_tracked
        self.states: dict[str, PollState] = {}
        self._owners: dict[str, frozenset[str]] = {}
        """Who tracks each key. The sets are shared (interned): almost every key has the same
        one or two owners, and a set of its own per key cost ~200 bytes each at 100,000."""
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        self._by_function: dict[FunctionRef, set[str]] = {}
        self.refused = 0
        """New invocations turned away at the cap (a metric)."""
        self.evicted = 0
        """Finished invocations forgotten to make room (a metric)."""
        self._at_cap = False

    def __len__(self) -> int:
        return len(self.states)

    def claim(self, source: str, key: str) -> bool:
        """Note that ``source`` wants ``key``; True if it was tracked already."""
        owners = self._owners.get(key)
        if owners is None:
            return False
        if source not in owners:
            self._owners[key] = self._intern(owners | {source})
        return True

    def _intern(self, owners: frozenset[str]) -> frozenset[str]:
        return self._interned.setdefault(owners, owners)

    def add(self, source: str, state: PollState) -> bool:
        """Track a new state for ``source``; False if the cap turned it away."""
        if len(self.states) >= self.max_tracked and not self._make_room():
            self.refused += 1
            if not self._at_cap:
                self._at_cap = True
                _log.warning(
                    "tracking_cap_reached",
                    max_tracked=self.max_tracked,
                    hint="every tracked invocation is still active; new ones are not tracked"
                    " until some finish (raise poll.max_tracked if memory allows)",
                )
            return False
        self._at_cap = False
        key = state.ref.key
        self.states[key] = state
        self._owners[key] = self._intern(frozenset((source,)))
        self._by_function.setdefault(state.ref.function_ref, set()).add(key)
        return True

    def release(self, source: str, key: str) -> bool:
        """``source`` lets ``key`` go; True if nobody wants it any more (it was dropped)."""
        owners = self._owners.get(key)
        if owners is None:
            return False
        rest = owners - {source}
        if rest:
            self._owners[key] = self._intern(rest)
            return False
        self._drop(key)
        return True

    def _drop(self, key: str) -> None:
        state = self.states.pop(key)
        del self._owners[key]
        keys = self._by_function.get(state.ref.function_ref)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_function[state.ref.function_ref]

    def _make_room(self) -> bool:
        """Forget the longest-unchanged finished invocations; False if none is finished."""
        wanted = max(1, int(self.max_tracked * _EVICT_FRACTION))
        finished = (
            (state.snapshot.changed_ms if state.snapshot else 0, key)
            for key, state in self.states.items()
            if state.done
        )
        oldest = heapq.nsmallest(wanted, finished)
        for _, key in oldest:
            self._drop(key)
        self.evicted += len(oldest)
        if oldest:
            _log.info("tracking_cap_evicted", forgotten=len(oldest), max_tracked=self.max_tracked)
        return bool(oldest)

    def of_function(self, function_ref: FunctionRef) -> Iterator[PollState]:
        """The tracked states of one function."""
        states = self.states
        for key in self._by_function.get(function_ref, ()):
            yield states[key]

    def functions(self) -> list[FunctionRef]:
        return list(self._by_function)

    def get_demand_per_s(self, scanned: Collection[FunctionRef]) -> float:
        """Gets a second the tracked set asks for: each active invocation that no scan
        watches, once per its (adaptive) interval."""
        return sum(
            1.0 / state.interval_s
            for state in self.states.values()
            if not state.done
            and not (state.ref.function_ref in scanned and is_scan_watched(state.snapshot))
        )

    def found_by_of(self, key: str) -> str | None:
        """How one tracked invocation was found (listed, discovered, live), or None."""
        owners = self._owners.get(key)
        return None if owners is None else found_by(owners)

    def found_by_counts(self) -> Counter[str]:
        """Tracked invocations by how they were found (listed, discovered, live)."""
        return Counter(found_by(owners) for owners in self._owners.values())
