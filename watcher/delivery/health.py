"""Sink health as pure decisions: whose fault a failed send was, and each sink's circuit.

``blame`` tells a sink-wide failure from one row's: no answer at all (refused, reset, timeout,
DNS) is the receiver's at once; a retryable answer (5xx, 429, 408...) is the receiver's once
such answers, with no good answer between them, span two or more invocations; a Retry-After
pauses the whole sink; a permanent answer is the row's and dead-letters it. The ``Circuit``
opens on a sink-wide failure; while open, one probe at a time (the oldest due head) goes out,
spaced by exponential backoff with full jitter up to a cap; the first success closes it.
Outage waits are kept out of the rows altogether: a row failed by the sink is left due at once
(its ``attempts`` counted, its own ``row_failures`` not), and only the circuit says when the
sink may send. So when the circuit closes every held row is already due, with no store write
and no backoff the outage grew, and a restart mid-outage leaves no inflated waits behind
(chosen over resetting the rows on recovery, which would need a write that a crash can miss).
Everything here is a function of its arguments (time and the random source are passed in): no
I/O, no clock, no logging; ``circuits.Circuits`` keeps the state and reports its changes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Set
from dataclasses import dataclass
from enum import Enum

from watcher.core.backoff import backoff_s
from watcher.delivery.sinks.base import FailureKind, SinkError
from watcher.store.records import SinkHealthRecord

SINK_WIDE_INVOCATIONS = 2
"""Retryable answers in a row across this many invocations are the receiver's, not a row's."""


class Blame(Enum):
    """Whose failure a failed send was, and so what it changes."""

    ROW = "row"
    """The row's own: its backoff grows; the sink goes on with other invocations."""
    SINK = "sink"
    """The receiver's: the circuit opens (or stays open); the row is not charged."""
    THROTTLE = "throttle"
    """The receiver asked for a pause (Retry-After): the whole sink waits that long."""
    REJECTED = "rejected"
    """Permanent: the row goes to the dead letters; the receiver did answer."""


@dataclass(frozen=True, slots=True)
class Circuit:
    """One sink's health. Closed (``open`` False) is healthy."""

    open: bool = False
    since_ms: int = 0
    """When the current state began (the outage's start while open)."""
    last_success_ms: int = 0
    last_error: str = ""
    streak: frozenset[str] = frozenset()
    """Invocations of the retryable answers since the last good (or permanent) one."""
    probes_failed: int = 0
    probe_due_ms: int = 0
    paused_until_ms: int = 0
    """A Retry-After: nothing goes to the sink before this, open or closed."""


@dataclass(frozen=True, slots=True)
class Gate:
    """What the circuit allows now: nothing for ``wait_ms``, then all due rows (closed) or
    one probe (open)."""

    wait_ms: int
    probe: bool


@dataclass(frozen=True, slots=True)
class ProbeTiming:
    """How probes are spaced while the circuit is open."""

    base_s: float
    cap_s: float


def blame(error: SinkError, keys: Set[str], circuit: Circuit) -> Blame:
    """Whose fault ``error`` was, for a send of rows of the invocations ``keys``. Pure."""
    if not error.retryable or error.kind is FailureKind.PERMANENT:
        return Blame.REJECTED
    if error.retry_after_s:  # "Retry-After: 0" asks for no pause: a plain retryable answer
        return Blame.THROTTLE
    if circuit.open or error.kind is FailureKind.TRANSPORT:
        return Blame.SINK
    if len(circuit.streak | keys) >= SINK_WIDE_INVOCATIONS:
        return Blame.SINK
    return Blame.ROW


def probe_delay_ms(failed: int, timing: ProbeTiming, rng: random.Random) -> int:
    """Wait before the next probe after ``failed`` failed probes: full jitter over
    ``base * 2**failed``, capped, so the first probe comes within ``base``."""
    return int(backoff_s(failed + 1, base_s=timing.base_s, cap_s=timing.cap_s, rng=rng) * 1000)


def after_success(circuit: Circuit, now_ms: int) -> Circuit:
    """The first success closes the circuit and forgets the streak. Pure."""
    return Circuit(
        open=False,
        since_ms=now_ms if circuit.open else circuit.since_ms,
        last_success_ms=now_ms,
        last_error=circuit.last_error,
        paused_until_ms=circuit.paused_until_ms,
    )


def after_failure(
    circuit: Circuit,
    blamed: Blame,
    keys: Set[str],
    *,
    probe: bool,
    now_ms: int,
    error: SinkError,
    timing: ProbeTiming,
    rng: random.Random,
) -> Circuit:
    """The circuit after a failed send blamed ``blamed``; ``probe`` if it was the probe. Pure
    but for the draws from ``rng`` (only when a probe is scheduled)."""
    if blamed is Blame.REJECTED:
        # An answer, if a refusal: the receiver is there. A probe that met it told nothing
        # about the sink's health, so the next head is probed at once.
        due = now_ms if probe else circuit.probe_due_ms
        return dataclasses.replace(circuit, streak=frozenset(), probe_due_ms=due)
    changed = dataclasses.replace(circuit, last_error=str(error))
    if blamed is Blame.THROTTLE:
        assert error.retry_after_s is not None
        until = max(circuit.paused_until_ms, now_ms + int(error.retry_after_s * 1000))
        return dataclasses.replace(changed, paused_until_ms=until)
    if blamed is Blame.ROW:
        return dataclasses.replace(changed, streak=circuit.streak | frozenset(keys))
    if not circuit.open:
        return dataclasses.replace(
            changed,
            open=True,
            since_ms=now_ms,
            streak=frozenset(),
            probes_failed=0,
            probe_due_ms=now_ms + probe_delay_ms(0, timing, rng),
        )
    if not probe:
        return changed  # a send already in flight when the circuit opened: no new evidence
    failed = circuit.probes_failed + 1
    return dataclasses.replace(
        changed, probes_failed=failed, probe_due_ms=now_ms + probe_delay_ms(failed, timing, rng)
    )


def gate(circuit: Circuit, now_ms: int) -> Gate:
    """What may go to the sink at ``now_ms``. Pure."""
    until = circuit.paused_until_ms
    if circuit.open:
        until = max(until, circuit.probe_due_ms)
    return Gate(max(0, until - now_ms), circuit.open)


def restored(record: SinkHealthRecord) -> Circuit:
    """A circuit from its stored state: an open one probes at once after a restart (the
    outage may be over), and keeps its start so the outage's length stays true."""
    return Circuit(
        open=not record.healthy,
        since_ms=record.since_ms,
        last_success_ms=record.last_success_ms,
        last_error=record.last_error,
    )
