"""What this replica holds, when several share one PostgreSQL state: slot -> epoch.

A function's slot (``watcher.core.slots``) decides which replica polls, scans, commits and
delivers for it. The heartbeat (``watcher.daemon.replica``) replaces the held slots; the
scheduler and discovery ask ``fence`` before each poll or scan and pass what it gives to
the store's fenced writes, which commit only while the database agrees. A write refused there
(``FencedError``) drops the slot here at once: nothing more is tried for it until a heartbeat
hands it back, with a new epoch.

With SQLite (one host) there is no ``Ownership`` at all: the scheduler's one check per poll is
``ownership is None``, so that path costs nothing more.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from watcher.core.invocation import FunctionRef
from watcher.core.slots import function_key, slot_of
from watcher.store.protocols import FencedStore
from watcher.store.records import Fence

if TYPE_CHECKING:
    from watcher.engine.poll_state import PollState

_log = structlog.get_logger("watcher.ownership")


def function_slot(function_ref: FunctionRef) -> int:
    """The slot of ``function_ref``."""
    fn = function_ref
    return slot_of(function_key(fn.api.value, fn.service, fn.function, fn.qualifier))


class Ownership:
    """The slots this replica holds, by epoch; read on every poll, replaced per heartbeat."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self._held: dict[int, int] = {}
        self._slots: dict[FunctionRef, int] = {}
        """Each function's slot, hashed once."""

    def __repr__(self) -> str:
        return f"Ownership({self.replica!r}, {len(self._held)} slots)"

    def slot(self, function_ref: FunctionRef) -> int:
        slot = self._slots.get(function_ref)
        if slot is None:
            slot = self._slots[function_ref] = function_slot(function_ref)
        return slot

    def fence(self, function_ref: FunctionRef) -> Fence | None:
        """The fence for writes about ``function_ref``, or None if its slot is not held."""
        slot = self.slot(function_ref)
        epoch = self._held.get(slot)
        return None if epoch is None else Fence(slot, epoch, self.replica)

    def owns(self, function_ref: FunctionRef) -> bool:
        return self.slot(function_ref) in self._held

    def count_active(self, states: Iterable[PollState]) -> int:
        """Of ``states``, those still polled whose slot this replica holds."""
        return sum(1 for s in states if not s.done and self.owns(s.ref.function_ref))

    def take_fence(self, state: PollState) -> bool:
        """Give ``state`` the fence its next writes use; False if it is not this replica's."""
        state.fence = self.fence(state.ref.function_ref)
        return state.fence is not None

    def held(self) -> dict[int, int]:
        """The held slots, slot -> epoch (a copy)."""
        return dict(self._held)

    def slots(self) -> frozenset[int]:
        return frozenset(self._held)

    def update(self, held: Mapping[int, int]) -> tuple[set[int], set[int]]:
        """What a heartbeat says is held now; returns (gained, lost). A slot held again
        under a new epoch counts as gained: another replica may have worked it meanwhile."""
        gained = {slot for slot, epoch in held.items() if self._held.get(slot) != epoch}
        lost = set(self._held) - set(held)
        self._held = dict(held)
        if gained or lost:
            _log.info("slots_changed", gained=sorted(gained), lost=sorted(lost), held=len(held))
        return gained, lost

    def drop(self, fence: Fence) -> bool:
        """A fenced write was refused: that hold is gone (unless a newer epoch replaced it)."""
        if self._held.get(fence.slot) != fence.epoch:
            return False
        del self._held[fence.slot]
        _log.warning("slot_fenced", slot=fence.slot, epoch=fence.epoch)
        return True

    def clear(self) -> set[int]:
        """Hold nothing (no heartbeat for a lease: the slots are not safe); the lost slots."""
        lost, self._held = set(self._held), {}
        return lost

    def functions_in(
        self, slots: Collection[int], functions: Collection[FunctionRef]
    ) -> list[FunctionRef]:
        """Those of ``functions`` whose slot is in ``slots``."""
        return [fn for fn in functions if self.slot(fn) in slots]


@dataclass(frozen=True, slots=True)
class Fencing:
    """What the poller and discovery need to write as a replica: whose slots, and where."""

    ownership: Ownership
    store: FencedStore
