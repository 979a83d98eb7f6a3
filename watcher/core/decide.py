"""The decisions after a poll, as pure functions: no I/O, no clock, no randomness.

Each takes the previous snapshot and what the poll found, and returns the next snapshot and the
transitions to emit. The caller commits both in one transaction, so re-running a function on
the same inputs after a crash re-derives the same transition ids and nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from watcher.core.invocation import Invocation, InvocationEvent, InvocationRef, Status
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


def new_events(invocation: Invocation, high_water: int) -> list[InvocationEvent]:
    """Events above ``high_water``, in eventId order, each id once (FC may repeat or reorder)."""
    unique: dict[int, InvocationEvent] = {}
    for event in invocation.events:
        if event.event_id > high_water:
            unique.setdefault(event.event_id, event)
    return [unique[event_id] for event_id in sorted(unique)]


def diff(
    previous: Snapshot | None,
    current: Invocation,
    *,
    ref: InvocationRef,
    observed_ms: int,
    labels: Mapping[str, str] | None = None,
) -> DiffResult:
    """Compare a successful poll with the previous snapshot.

    A status change is keyed by (previous status, status, alreadyRetriedTimes, how many changes
    came before), so a status that recurs (Running, Retrying, Running) is a new transition with
    a new id, while re-deriving the same change from the same snapshot gives the same id.
    """
    before = previous or Snapshot()
    tags = dict(labels or {})
    summary = InvocationSummary.of(current)
    transitions: list[Transition] = []
    if before.failing:
        transitions.append(
            Transition(
                id=transition_id(ref, TransitionType.POLL_RECOVERED, before.failing_episode),
                type=TransitionType.POLL_RECOVERED,
                ref=ref,
                observed_ms=observed_ms,
                status=current.status,
                invocation=summary,
                labels=tags,
            )
        )
    events = new_events(current, before.event_high_water)
    for event in events:
        transitions.append(
            Transition(
                id=transition_id(ref, TransitionType.EVENT, event.event_id),
                type=TransitionType.EVENT,
                ref=ref,
                observed_ms=observed_ms,
                status=current.status,
                event=event,
                invocation=summary,
                labels=tags,
            )
        )
    status_changes = before.status_changes
    if (before.status, before.already_retried_times) != (
        current.status,
        current.already_retried_times,
    ):
        status_changes += 1
        transitions.append(
            Transition(
                id=transition_id(
                    ref,
                    TransitionType.STATUS_CHANGED,
                    before.status,
                    current.status,
                    current.already_retried_times,
                    status_changes,
                ),
                type=TransitionType.STATUS_CHANGED,
                ref=ref,
                observed_ms=observed_ms,
                status=current.status,
                previous_status=before.status,
                invocation=summary,
                labels=tags,
            )
        )
    last_event = events[-1] if events else None
    status_since_ms = before.status_since_ms
    stuck_reported = before.stuck_reported
    if before.status != current.status:
        matching = [e.timestamp_ms for e in current.events if e.status == current.status]
        status_since_ms = max(matching) if matching and max(matching) > 0 else observed_ms
        stuck_reported = 0
    after = replace(
        before,
        status=current.status,
        already_retried_times=current.already_retried_times,
        status_changes=status_changes,
        event_high_water=last_event.event_id if last_event else before.event_high_water,
        started_ms=current.started_ms,
        end_ms=current.end_ms,
        error_message=current.error_message,
        last_event_status=last_event.status if last_event else before.last_event_status,
        last_event_ms=last_event.timestamp_ms if last_event else before.last_event_ms,
        not_found_count=0,
        not_found_reported=False,
        failing=False,
        status_since_ms=status_since_ms,
        stuck_reported=stuck_reported,
    )
    return _result(before, after, transitions, observed_ms)


def not_found(
    previous: Snapshot | None,
    *,
    ref: InvocationRef,
    observed_ms: int,
    report_after: int,
    labels: Mapping[str, str] | None = None,
) -> DiffResult:
    """FC answered not-found. Report it once, after ``report_after`` answers in a row.

    FC says not-found for a moment after submission, so the first few are expected. Once the
    invocation has been seen, a later not-found (records expire after 7 days) is reported too.
    """
    before = previous or Snapshot()
    if before.not_found_reported:
        return DiffResult(before, ())
    count = before.not_found_count + 1
    first_ms = before.first_not_found_ms or observed_ms
    transitions: list[Transition] = []
    reported = count >= report_after
    if reported:
        transitions.append(
            Transition(
                # Never seen vs. seen and then gone (records expire): two different facts.
                id=transition_id(
                    ref, TransitionType.NOT_FOUND, "seen" if before.status else "never-seen"
                ),
                type=TransitionType.NOT_FOUND,
                ref=ref,
                observed_ms=observed_ms,
                status=before.status,
                detail=f"FC answered not-found {count} times in a row",
                labels=dict(labels or {}),
            )
        )
    after = replace(
        before, not_found_count=count, first_not_found_ms=first_ms, not_found_reported=reported
    )
    return _result(before, after, transitions, observed_ms)


def poll_failed(
    previous: Snapshot | None,
    *,
    ref: InvocationRef,
    observed_ms: int,
    consecutive_failures: int,
    threshold: int,
    detail: str,
    labels: Mapping[str, str] | None = None,
) -> DiffResult:
    """A poll failed. Past ``threshold`` failures in a row, report ``poll_failing`` once."""
    before = previous or Snapshot()
    if before.failing or consecutive_failures < threshold:
        return DiffResult(before, ())
    episode = before.failing_episode + 1
    transition = Transition(
        id=transition_id(ref, TransitionType.POLL_FAILING, episode),
        type=TransitionType.POLL_FAILING,
        ref=ref,
        observed_ms=observed_ms,
        status=before.status,
        detail=f"{consecutive_failures} polls in a row failed; last: {detail}",
        labels=dict(labels or {}),
    )
    after = replace(before, failing=True, failing_episode=episode)
    return _result(before, after, [transition], observed_ms)


STUCK_STATUSES = frozenset({Status.ENQUEUED, Status.DEQUEUED, Status.RUNNING})


def stuck(
    previous: Snapshot | None,
    *,
    ref: InvocationRef,
    now_ms: int,
    stuck_after_s: float,
    repeat_s: float | None,
    labels: Mapping[str, str] | None = None,
) -> DiffResult:
    """Report an invocation that stays Enqueued, Dequeued or Running too long: once after
    ``stuck_after_s``, then every ``repeat_s`` if set. Each reminder has its own id."""
    before = previous or Snapshot()
    if before.status not in STUCK_STATUSES or not before.status_since_ms:
        return DiffResult(before, ())
    age_s = (now_ms - before.status_since_ms) / 1000
    if age_s < stuck_after_s:
        return DiffResult(before, ())
    due = 1 if not repeat_s else 1 + int((age_s - stuck_after_s) // repeat_s)
    if before.stuck_reported >= due:
        return DiffResult(before, ())
    transition = Transition(
        id=transition_id(ref, TransitionType.STUCK, before.status, before.status_changes, due),
        type=TransitionType.STUCK,
        ref=ref,
        observed_ms=now_ms,
        status=before.status,
        detail=f"{before.status} for {int(age_s)} s (stuck_after_s: {stuck_after_s:g})",
        labels=dict(labels or {}),
    )
    return _result(before, replace(before, stuck_reported=due), [transition], now_ms)


def _result(
    before: Snapshot, after: Snapshot, transitions: list[Transition], observed_ms: int
) -> DiffResult:
    if after == before:
        return DiffResult(before, tuple(transitions))
    return DiffResult(replace(after, changed_ms=observed_ms), tuple(transitions), True)
