"""What the store hands out besides snapshots and transitions: plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass

from watcher.core.model import Snapshot


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


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one retention batch deleted."""

    invocations: int
    transitions: int
    outbox_rows: int
    next_after_key: str | None
    """Where the next batch starts (keyset paging); None when the scan is complete."""
