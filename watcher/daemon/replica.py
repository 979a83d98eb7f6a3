"""One replica among several sharing a PostgreSQL state: its heartbeat, and what a slot's
arrival means.

Every ``state.lease_s / 3`` the replica heartbeats (``PostgresStore.heartbeat``: one
transaction that renews its slots and rebalances them to the fair share, on the database's
clock) and learns which slots it holds. Slots that went are dropped at once: their polls are
skipped from then on, and the fence refuses any write already under way. Slots that came are
adopted before they are polled: the snapshots and watermarks other replicas committed are read
back (every replica tracks every invocation, but only the slot's holder polls it), then their
invocations are polled within one interval. A replica that cannot heartbeat for a whole lease
drops every slot (another will have taken them) until the database answers again. A graceful
stop hands the slots back at once (``leave``), so nobody waits a lease for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Collection
from typing import Protocol

import structlog

from watcher.config.models import StateSettings
from watcher.core.clock import Clock
from watcher.daemon.build import Parts
from watcher.engine.cadence import forgotten
from watcher.engine.ownership import Fencing, Ownership
from watcher.engine.poll import is_finished
from watcher.store.errors import StateStoreError
from watcher.store.protocols import FencedStore, LeaseStore, SnapshotStore, TrackingStore

_log = structlog.get_logger("watcher.replica")


class ReplicaStore(LeaseStore, FencedStore, SnapshotStore, TrackingStore, Protocol):
    """What a replica needs of the store (``PostgresStore``)."""


def replica_id(state: StateSettings) -> str:
    """``state.replica_id``, or this host's name and this process's id."""
    return state.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def replica_fencing(store: object, state: StateSettings) -> Fencing | None:
    """The fencing of a replica when ``store`` is shared (PostgreSQL), else None (SQLite)."""
    from watcher.store.postgres import PostgresStore  # asyncpg only when used

    if not isinstance(store, PostgresStore):
        return None
    return Fencing(Ownership(replica_id(state)), store)


class Replica:
    """Heartbeats for one ``Ownership`` and adopts the slots that come to it."""

    def __init__(
        self,
        store: ReplicaStore,
        parts: Parts | None,
        ownership: Ownership,
        lease_s: float,
        clock: Clock,
    ) -> None:
        self.store = store
        self.ownership = ownership
        self.lease_s = lease_s
        self._parts = parts
        self._clock = clock
        self._last_ok_s: float | None = None
        self._unadopted: set[int] = set()
        """Slots held whose adoption failed (the database away): tried again each beat."""

    @property
    def id(self) -> str:
        return self.ownership.replica

    @property
    def lease_ms(self) -> int:
        return int(self.lease_s * 1000)

    async def join(self) -> None:
        """The first heartbeat (before READY; raises ``StateStoreError`` if the database is
        away): the build just read every snapshot, so nothing needs adopting yet."""
        held = await self.store.heartbeat(self.id, self.lease_ms)
        self._last_ok_s = self._clock.monotonic()
        self.ownership.update(held)
        self.store.claim_outbox_as(self.id, self.ownership.slots, self.lease_ms)

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat every third of a lease until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.lease_s / 3)
            if not stop.is_set():
                try:
                    await self.beat()
                except Exception:  # a bug here must not stop the polls of the slots it holds
                    _log.exception("heartbeat_crashed", replica=self.id)

    async def beat(self) -> None:
        """One heartbeat: keep what is still held, adopt what came, drop what went."""
        sent_s = self._clock.monotonic()
        try:
            # Bounded: a heartbeat that hangs (the server away without a word) must not keep
            # slots past their lease here; the server bounds its own statements well before.
            held = await asyncio.wait_for(
                self.store.heartbeat(self.id, self.lease_ms), timeout=self.lease_s
            )
        except (StateStoreError, TimeoutError) as exc:
            self._missed(sent_s, exc)
            return
        self._last_ok_s = sent_s
        before = self.ownership.held()
        kept = {slot: epoch for slot, epoch in held.items() if before.get(slot) == epoch}
        self.ownership.update(kept)  # what went (or came back under a new epoch) goes first
        came = (set(held) - set(kept)) | (self._unadopted & set(held))
        await self._adopt(came)
        self.ownership.update(held)
        if held:
            # Each beat, not only when slots moved: rows another replica claimed (it left, or
            # lost the slot) become this one's when the claim ends, and nothing else would
            # wake a dispatcher whose last pass found none of them claimable.
            self._wake_delivery()

    def _missed(self, sent_s: float, exc: BaseException) -> None:
        last = self._last_ok_s
        error = str(exc) or type(exc).__name__
        if self.ownership.slots() and (last is None or sent_s - last >= self.lease_s):
            lost = self.ownership.clear()
            _log.error("replica_lease_lost", replica=self.id, slots=len(lost), error=error)
        else:
            _log.warning("heartbeat_failed", replica=self.id, error=error)

    async def _adopt(self, slots: Collection[int]) -> None:
        """Read back what other replicas committed for ``slots``, then poll it."""
        parts = self._parts
        if not slots or parts is None:
            return
        scheduler, discovery = parts.scheduler, parts.discovery
        known = set(scheduler.tracked.functions()) | set(discovery.scanners)
        functions = self.ownership.functions_in(slots, known)
        try:
            snapshots = await self.store.load_snapshots() if functions else {}
            watermarks = await self.store.load_watermarks() if functions else {}
        except StateStoreError as exc:
            _log.warning("slots_not_adopted", slots=sorted(slots), error=str(exc))
            self._unadopted |= set(slots)
            return
        self._unadopted -= set(slots)
        now_ms, settings = self._clock.wall_ms(), scheduler.settings
        states = [state for fn in functions for state in scheduler.function_states(fn)]
        for state in states:
            stored = snapshots.get(state.ref.key)
            if stored is not None and stored != state.snapshot:
                state.snapshot, state.digest, state.terminal_polls = stored, None, 0
                state.done = is_finished(stored, 0) or forgotten(stored, settings, now_ms)
        discovery.adopt(functions, snapshots, watermarks)
        scheduler.spread(states)

    def _wake_delivery(self) -> None:
        if self._parts is not None:
            self._parts.dispatcher.wake()

    async def leave(self) -> None:
        """Hand every slot back now (a graceful stop); a failure leaves them to expire."""
        self.store.claim_outbox_as(None, frozenset, self.lease_ms)
        self.ownership.clear()
        try:
            await self.store.leave(self.id)
        except StateStoreError as exc:
            _log.warning("replica_leave_failed", replica=self.id, error=str(exc))


async def join_replica(
    fencing: Fencing | None, parts: Parts, state: StateSettings, clock: Clock
) -> Replica | None:
    """The replica of ``fencing`` (None for SQLite), joined: it holds its first slots."""
    if fencing is None:
        return None
    from watcher.store.postgres import PostgresStore

    store = fencing.store
    assert isinstance(store, PostgresStore), "replicas share a PostgreSQL state"
    replica = Replica(store, parts, fencing.ownership, state.lease_s, clock)
    await replica.join()
    return replica
