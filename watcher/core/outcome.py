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
        detail=detail,
        labels=dict(labels or {}),
    )
