"""What each layer needs of the state store, as protocols.

The engine commits polls, delivery works the outbox, the daemon reads for status, metrics and
retention. Each depends on the narrow protocol it uses, so a second backend only has to meet
these, and tests can see what a layer touches. Every method that reads or writes the database
is a coroutine: the work runs off the event loop, so a slow or locked database never stalls
polls or watchdog pings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target
from watcher.core.silence import Silence, SilenceSpec
from watcher.store.records import (
    DeadLetter,
    Fence,
    InvocationRow,
    LiveChange,
    LiveItem,
    OutboxRow,
    Pruned,
    ReplicaInfo,
    SilenceExpiry,
    SinkBacklog,
    SinkHealthRecord,
    WriteHealth,
)


class PollStore(Protocol):
    """What one poll writes: the snapshot, its transitions and their outbox rows, at once."""

    async def commit(
        self,
        ref: InvocationRef,
        snapshot: Snapshot,
        *,
        transitions: Sequence[Transition],
        routes: Mapping[str, Sequence[Target]],
        now_ms: int,
        silenced: Mapping[str, str] | None = None,
    ) -> list[Transition]:
        """Write all of it in one transaction; return the transitions that were new.
        ``silenced``: transition id -> the id of the silence that held it back."""
        ...


class SnapshotStore(Protocol):
    """The last known state of every invocation, read at start and on reload."""

    async def load_snapshots(self) -> dict[str, Snapshot]: ...

    async def load_snapshots_of(self, keys: Collection[str]) -> dict[str, Snapshot]:
        """The stored snapshots of ``keys`` only (a live id must not cost a read of all)."""
        ...

    async def record_polled(self, last_polled_ms: Mapping[str, int]) -> None: ...


class WriteHealthSource(Protocol):
    """Whether the store's writes work: what readiness, STATUS and the metrics report."""

    def write_health(self) -> WriteHealth:
        """From memory (no database access): unhealthy from a failed write until one
        succeeds, with the reason and since when."""
        ...


class OutboxStore(WriteHealthSource, Protocol):
    """The delivery queue: one row per transition and sink, until sent or dead."""

    async def pending(self, sink: str, limit: int) -> list[OutboxRow]: ...

    async def load_transitions(self, ids: Sequence[str]) -> dict[str, Transition]: ...

    async def mark_sent(self, seqs: Iterable[int], now_ms: int) -> None: ...

    async def mark_retry(
        self, seqs: Iterable[int], next_attempt_ms: int, error: str, *, own_failure: bool = True
    ) -> None:
        """``own_failure``: the failure was the row's (it grows ``row_failures``, hence its
        backoff), not the sink's outage (which only counts in ``attempts``)."""
        ...

    async def mark_dead(self, seqs: Iterable[int], now_ms: int, error: str) -> None: ...

    async def pending_count(self, sink: str) -> int: ...

    async def save_sink_health(self, record: SinkHealthRecord) -> None:
        """Called only when a sink's circuit opens or closes, never per send."""
        ...

    async def sink_health(self) -> list[SinkHealthRecord]: ...


class StatusReader(WriteHealthSource, Protocol):
    """What ``status``, ``redeliver``, metrics and the watchdog read."""

    async def invocation_rows(self) -> list[InvocationRow]: ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    async def outbox_by_sink(self) -> list[SinkBacklog]: ...

    async def outbox_counts(self) -> dict[str, int]: ...

    async def sink_health(self) -> list[SinkHealthRecord]: ...

    async def transitions(self) -> list[Transition]: ...

    async def redeliver(
        self, *, sink: str | None, transition_id: str | None, now_ms: int
    ) -> int: ...

    def cached_backlog(self) -> Sequence[SinkBacklog]:
        """The backlog as of the store's last read or write: no database access, so a
        metrics scrape or a watchdog STATUS costs nothing however large the outbox."""
        ...


class Prunable(Protocol):
    """Retention: old finished invocations go, with their delivered rows."""

    async def prune(
        self,
        *,
        changed_before_ms: int,
        protected_keys: Collection[str],
        after_key: str | None,
        batch: int,
    ) -> Pruned: ...


class TrackingStore(Protocol):
    """What is tracked besides the config: ids registered live (``fc-watcher track``, the
    HTTP API), and how far each discover entry's scan has got (its watermark). Both are
    durable, so a restart or a SIGKILL neither forgets a live id nor re-scans from scratch."""

    async def track_live(self, items: Sequence[LiveItem], now_ms: int) -> int:
        """Register ``items`` (idempotent); return how many were not live-tracked before."""
        ...

    async def untrack_live(self, refs: Sequence[InvocationRef], now_ms: int) -> int:
        """Unregister ``refs``; return how many were live-tracked."""
        ...

    async def live_changes(self, after_rev: int) -> tuple[int, list[LiveChange]]:
        """Every registration or removal after revision ``after_rev`` (0: all live ids now),
        and the revision to ask from next time. Cheap when nothing changed."""
        ...

    async def load_watermarks(self) -> dict[str, int]:
        """Each discover entry's watermark: the FC start time (ms) its scans have covered."""
        ...

    async def save_watermark(self, entry: str, started_ms: int, now_ms: int) -> None: ...

    async def save_daemon_info(self, values: Mapping[str, str], now_ms: int) -> None:
        """What the running daemon says of itself for ``status`` (its API demand...)."""
        ...


class SilenceStore(Protocol):
    """Silences (``fc-watcher silence``, the HTTP API, the status page): durable, so a
    restart keeps them, and revisioned like live ids, so a daemon hears of a change made
    beside it with one cheap lookup."""

    async def add_silence(self, spec: SilenceSpec, now_ms: int) -> Silence:
        """Record a checked silence; return it with its new id."""
        ...

    async def expire_silence(self, silence_id: str, now_ms: int) -> SilenceExpiry:
        """End a silence now; whether one has that id, and whether it was still running."""
        ...

    async def list_silences(self, *, ended_after_ms: int) -> list[Silence]:
        """Silences not ended by ``ended_after_ms``, coming ones included."""
        ...

    async def silence_changes(self, after_rev: int, now_ms: int) -> tuple[int, list[Silence]]:
        """Every silence changed after revision ``after_rev`` (0: all not ended by ``now_ms``)
        and the revision to ask from next time. Cheap when nothing changed."""
        ...


class FencedStore(Protocol):
    """The writes of a replica sharing the state (PostgreSQL): each checks, inside its own
    transaction, that ``fence`` still holds, else rolls back and raises ``FencedError``."""

    async def commit_fenced(
        self,
        fence: Fence,
        ref: InvocationRef,
        snapshot: Snapshot,
        *,
        transitions: Sequence[Transition],
        routes: Mapping[str, Sequence[Target]],
        now_ms: int,
        silenced: Mapping[str, str] | None = None,
    ) -> list[Transition]: ...

    async def save_watermark_fenced(
        self, fence: Fence, entry: str, started_ms: int, now_ms: int
    ) -> None: ...


class LeaseStore(Protocol):
    """The slots' leases (PostgreSQL): who holds which slot, renewed by heartbeats."""

    async def heartbeat(self, replica: str, lease_ms: int) -> dict[int, int]:
        """One heartbeat in one transaction (``watcher.store.postgres.leases``): the slots
        ``replica`` holds afterwards, slot -> epoch."""
        ...

    async def leave(self, replica: str) -> None:
        """Hand every slot of ``replica`` back at once and forget it (a graceful stop)."""
        ...

    async def replicas(self, lease_ms: int) -> list[ReplicaInfo]: ...

    def claim_outbox_as(
        self, replica: str | None, slots: Callable[[], Collection[int]], lease_ms: int = ...
    ) -> None:
        """From now on ``pending`` claims rows for ``replica`` in the ``slots()`` it holds
        (each claim for two leases), and marks touch only rows it claimed (None: unclaimed
        reads, as a single host)."""
        ...


class StateStore(
    PollStore,
    SnapshotStore,
    OutboxStore,
    StatusReader,
    Prunable,
    TrackingStore,
    SilenceStore,
    Protocol,
):
    """Everything: what the daemon opens and hands out by the narrow protocols above."""

    async def close(self) -> None: ...
