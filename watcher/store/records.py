"""What the store hands out besides snapshots and transitions: plain frozen records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot
from watcher.core.silence import Silence
from watcher.store.errors import FailureKind


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One pending delivery of one transition to one sink."""

    seq: int
    transition_id: str
    invocation_key: str
    attempts: int
    next_attempt_ms: int
    created_ms: int
    severity: str = "info"
    template: str | None = None
    row_failures: int = 0
    """Failures that were this row's own (the sink healthy): only these grow its backoff.
    ``attempts`` counts every attempt, the ones an outage failed included."""


@dataclass(frozen=True, slots=True)
class SinkHealthRecord:
    """A sink's circuit as last changed: written only when it opens or closes, so that
    ``status`` (another process) can show it and a restarted daemon resumes probing."""

    sink: str
    healthy: bool
    since_ms: int
    """When the current state began: the outage's start while unhealthy."""
    last_success_ms: int
    last_error: str


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """One sink's share of the outbox."""

    sink: str
    pending: int
    dead: int
    oldest_created_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery given up on: kept until redelivered."""

    seq: int
    sink: str
    transition_id: str
    invocation_key: str
    attempts: int
    last_error: str
    dead_ms: int
    type: str


@dataclass(frozen=True, slots=True)
class InvocationRow:
    """An invocation as ``fc-watcher status`` shows it."""

    key: str
    api: str
    service: str | None
    function: str
    qualifier: str | None
    invocation_id: str
    snapshot: Snapshot
    last_polled_ms: int
    silenced_by: str = ""
    """The silence that held its latest transition (events aside) back from the alerting
    sinks, when the read asked for it ("" otherwise, or when none did)."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one retention batch deleted."""

    invocations: int
    transitions: int
    outbox_rows: int
    next_after_key: str | None
    """Where the next batch starts (keyset paging); None when the scan is complete."""


@dataclass(frozen=True, slots=True)
class WriteHealth:
    """Whether the store's writes work: unhealthy from a failed write until one succeeds.

    Kept in memory by the store, so readiness, STATUS lines and scrapes read it for free."""

    ok: bool = True
    kind: str = ""
    """The last failure's ``FailureKind`` value ("" while ok)."""
    reason: str = ""
    """The last failure's one line: what, where, how to fix ("" while ok)."""
    since_ms: int = 0
    """When the current state began (the first failed write of an outage); 0: since open."""
    failing_writes: int = 0
    """Writes failed since the outage began."""
    failed_by_kind: Mapping[str, int] = field(default_factory=dict)
    """Writes failed since the store opened, by kind (the metric); never changed in place."""

    def describe(self) -> str:
        """A few words: "disk full since 2026-05-09T10:15:02+00:00, 37 writes failed"."""
        if self.ok:
            return "ok"
        since = datetime.fromtimestamp(self.since_ms / 1000, UTC).isoformat(timespec="seconds")
        count = f"{self.failing_writes} write{'' if self.failing_writes == 1 else 's'}"
        return f"{FailureKind(self.kind).phrase} since {since}, {count} failed"


@dataclass(frozen=True, slots=True)
class LiveItem:
    """One id registered live (``fc-watcher track`` or ``POST /api/v1/track``)."""

    ref: InvocationRef
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveChange:
    """A live registration (``tracked``) or its removal (not ``tracked``)."""

    ref: InvocationRef
    tracked: bool
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SilenceExpiry:
    """What ``expire_silence`` found: the silence as it stands now, and whether this call
    ended it (False: it had ended already)."""

    silence: Silence | None
    """None: no silence has that id."""
    expired: bool


@dataclass(frozen=True, slots=True)
class Fence:
    """A replica's hold on one slot: a fenced write commits only while the slot still has
    this owner and this epoch, and its lease has not run out (by the database's clock)."""

    slot: int
    epoch: int
    replica: str


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica as ``fc-watcher replicas`` shows it."""

    replica: str
    started_ms: int
    heartbeat_ms: int
    slots: tuple[int, ...]
    live: bool
    """Its heartbeat is within the lease it asked for (by the database's clock)."""
    age_ms: int = 0
    """How long ago its last heartbeat was, by the database's clock."""
