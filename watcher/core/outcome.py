"""What a decision returns, built one way: the ``DiffResult``, and each ``Transition`` in it.

Every decision in ``watcher.core.decide`` builds its transitions with ``make_transition`` so a
transition's id is always ``transition_id(ref, kind, *key)``; the ids are persisted and are the
idempotency key for delivery, so this is the one place they are formed. Pure: no I/O, no
clock; it must not decide anything (whether to emit is the caller's business).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from watcher.core.invocation import InvocationEvent, InvocationRef
from watcher.core.model import (
    InvocationSummary,
    Snapshot,
    Transition,
    TransitionType,
    transition_id,
)
from watcher.core.text import replace_surrogates


@dataclass(frozen=True, slots=True)
class DiffResult:
    """The next snapshot, and what happened between the two."""

    snapshot: Snapshot
    transitions: tuple[Transition, ...]
    snapshot_changed: bool = False

    @property
    def changed(self) -> bool:
        """Whether anything needs to be written."""
        return bool(self.transitions) or self.snapshot_changed


def settle(
    before: Snapshot, after: Snapshot, transitions: list[Transition], observed_ms: int
) -> DiffResult:
    """The answer of a decision: a snapshot that did not change is returned as it was (nothing to
    write); one that did is stamped with ``observed_ms`` as the time it changed."""
    if after == before:
        return DiffResult(before, tuple(transitions))
    return DiffResult(replace(after, changed_ms=observed_ms), tuple(transitions), True)


def event_key(event: InvocationEvent, high_water: int) -> tuple[object, ...]:
    """The key of an event's transition: its eventId alone while that id is above every id
    reported (FC numbers events once per invocation; these ids are persisted, never change).

    At or below the mark FC has renumbered the events, and the id may name an event already
    reported under the old numbering: reusing its transition id would drop this event as a
    duplicate. Its status and time make the key its own.
    """
    if event.event_id > high_water:
        return (event.event_id,)
    return (event.event_id, event.status, event.timestamp_ms)


def make_transition(
    ref: InvocationRef,
    kind: TransitionType,
    key: tuple[object, ...],
    *,
    observed_ms: int,
    status: str | None,
    labels: Mapping[str, str] | None,
    previous_status: str | None = None,
    event: InvocationEvent | None = None,
    invocation: InvocationSummary | None = None,
    detail: str = "",
) -> Transition:
    """Every transition is built here, so its id is always ``transition_id(ref, kind, *key)``.

    ``key`` holds the facts that make this transition distinct from any other of its kind; the
    ids are persisted, so changing what goes into a key would deliver old alerts again.
    """
    return Transition(
        id=transition_id(ref, kind, *key),
        type=kind,
        ref=ref,
        observed_ms=observed_ms,
        status=status,
        previous_status=previous_status,
        event=event,
        invocation=invocation,
        # An FC error body may escape a lone surrogate into the message this quotes; the outbox,
        # webhooks and files encode the detail as UTF-8, which a surrogate would make fail.
        detail=replace_surrogates(detail),
        labels=dict(labels or {}),
    )
