"""One function's invocations for List: in start order, and which are visible in which status.

A List page must not render every invocation (the benchmark has 10,000 a function). Every status
change of every invocation is one event in a time-sorted array; ``sync`` applies the events the
clock has passed since the last call, so the per-status lists are current after O(changes)
work, and a page is a bisect into one of them. Stops and submitted invocations insert events;
a clock that moves back rebuilds from scratch. Sort keys are ``(startedTime ms, id)``, unique
within a function (FC's ids are), which is also the order List serves and its keyset tokens hold.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from watcher.core.invocation import Api
from watcher.devtools.emulator.timeline import InvocationLike

InvocationKey = tuple[Api, str, str, str]  # api, service ("" for FC 3.0), function, id
SortKey = tuple[int, str]  # startedTime (epoch ms), id


def key_of(spec: InvocationLike) -> InvocationKey:
    """The key Get and List find ``spec`` under; FC 3.0 has no service."""
    service = (spec.service or "") if spec.api is Api.FC2 else ""
    return (spec.api, service, spec.function, spec.id)


@dataclass(slots=True, eq=False)
class Entry:
    """One invocation as the emulator holds it: its timeline, its stop, its cached bodies."""

    spec: InvocationLike
    key: InvocationKey
    sort_key: SortKey
    slot: int = -1
    stopped_at_s: float | None = None
    get_cache: tuple[object, bytes | None] | None = None
    list_cache: tuple[object, bytes] | None = None


def changes(spec: InvocationLike) -> Iterator[tuple[float, str]]:
    """When ``spec``'s List status changes, and to what: its appearance, then later steps."""
    if spec.appears_at_s is None:
        return
    appears_s = spec.appears_at_s
    status = "Enqueued"
    later: list[tuple[float, str]] = []
    for step in spec.timeline:
        if step.at_s <= appears_s:
            status = step.status  # steps before the appearance show at once, the last one wins
        else:
            later.append((step.at_s, step.status))
    yield appears_s, status
    yield from later


class FunctionIndex:
    """The invocations of one function, and their statuses at the last ``sync``."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries: list[Entry] = []
        self.by_sort_key: dict[SortKey, Entry] = {}
        times: list[float] = []
        slots: list[int] = []
        statuses: list[str] = []
        for entry in entries:
            self._register(entry)
            for at_s, status in changes(entry.spec):
                times.append(at_s)
                slots.append(entry.slot)
                statuses.append(status)
        self.order: list[SortKey] = sorted(self.by_sort_key)
        # A stable sort on time alone keeps each invocation's same-time steps in timeline order.
        ranked = sorted(range(len(times)), key=times.__getitem__)
        self._times = [times[i] for i in ranked]
        self._slots = [slots[i] for i in ranked]
        self._statuses = [statuses[i] for i in ranked]
        self._status: list[str | None] = [None] * len(self.entries)
        self._applied = 0
        self.visible: list[SortKey] = []
        self.by_status: dict[str, list[SortKey]] = {}

    def _register(self, entry: Entry) -> None:
        entry.slot = len(self.entries)
        self.entries.append(entry)
        self.by_sort_key[entry.sort_key] = entry

    def candidates(self, now_s: float, status: str | None) -> list[SortKey]:
        """The visible invocations (of ``status``, if given) at ``now_s``, in start order."""
        self.sync(now_s)
        return self.visible if status is None else self.by_status.get(status, [])

    def add(self, entry: Entry, now_s: float) -> None:
        """Index an invocation submitted at run time, its past applied at once."""
        self.sync(now_s)
        self._register(entry)
        self._status.append(None)
        bisect.insort(self.order, entry.sort_key)
        for at_s, status in changes(entry.spec):
            at = self._insert_event(at_s, entry.slot, status)
            if at_s <= now_s:  # among the events already applied: apply it as sync would have
                self._applied += 1
                self._move(at, self._set(at))

    def stop(self, entry: Entry, now_s: float) -> None:
        """Record a stop at ``now_s``: later steps are skipped, and it ends Stopped."""
        self.sync(now_s)
        entry.stopped_at_s = now_s
        self._insert_event(now_s, entry.slot, "Stopped")

    def _insert_event(self, at_s: float, slot: int, status: str) -> int:
        # After any event at the same time: a stop lands after the steps it keeps.
        at = bisect.bisect_right(self._times, at_s)
        self._times.insert(at, at_s)
        self._slots.insert(at, slot)
        self._statuses.insert(at, status)
        return at

    def sync(self, now_s: float) -> None:
        """Apply the events up to ``now_s``: one by one when few, else rebuild the lists."""
        target = bisect.bisect_right(self._times, now_s)
        if target == self._applied:
            return
        replay = target < self._applied
        if replay:  # the clock moved back: replay from the start
            self._status = [None] * len(self.entries)
            self._applied = 0
        if replay or target - self._applied > len(self.entries) // 8 + 16:
            for at in range(self._applied, target):
                self._set(at)
            self._rebuild()
        else:
            for at in range(self._applied, target):
                self._move(at, self._set(at))
        self._applied = target

    def _set(self, at: int) -> str | None:
        """Apply event ``at`` to the status vector; returns the status it replaced."""
        slot = self._slots[at]
        old = self._status[slot]
        stopped_at_s = self.entries[slot].stopped_at_s
        if stopped_at_s is None or self._times[at] <= stopped_at_s:
            self._status[slot] = self._statuses[at]
        return old

    def _move(self, at: int, old: str | None) -> None:
        """Move event ``at``'s invocation from ``old``'s list to its new status's list."""
        slot = self._slots[at]
        new = self._status[slot]
        if new == old or new is None:
            return
        key = self.entries[slot].sort_key
        if old is None:
            bisect.insort(self.visible, key)
        else:
            keys = self.by_status[old]
            del keys[bisect.bisect_left(keys, key)]
        bisect.insort(self.by_status.setdefault(new, []), key)

    def _rebuild(self) -> None:
        """Rebuild the visible and per-status lists from the status vector, in one ordered pass."""
        self.visible = []
        self.by_status = {}
        for key in self.order:
            status = self._status[self.by_sort_key[key].slot]
            if status is not None:
                self.visible.append(key)
                self.by_status.setdefault(status, []).append(key)
