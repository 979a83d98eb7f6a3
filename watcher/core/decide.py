"""The decisions after a poll, as pure functions: no I/O, no clock, no randomness.

Each takes the previous snapshot and what the poll found, and returns the next snapshot and the
transitions to emit. The caller commits both in one transaction, so re-running a function on
the same inputs after a crash re-derives the same transition ids and nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from watcher.core.invocation import Invocation, InvocationEvent, InvocationRef, Status
from watcher.core.model import InvocationSummary, Snapshot, Transition, TransitionType
from watcher.core.outcome import DiffResult, event_key, make_transition, settle

# DiffResult is part of this module's interface: callers write ``decide.DiffResult``.
__all__ = [
    "STUCK_STATUSES",
    "DiffResult",
    "diff",
    "new_events",
    "not_found",
    "poll_failed",
    "stuck",
    "unseen_events",
]


def new_events(invocation: Invocation, high_water: int) -> list[InvocationEvent]:
    """Events above ``high_water``, in eventId order, each id once (FC may repeat or reorder)."""
    unique: dict[int, InvocationEvent] = {}
    for event in invocation.events:
        if event.event_id > high_water:
            unique.setdefault(event.event_id, event)
    return [unique[event_id] for event_id in sorted(unique)]


def unseen_events(before: Snapshot, current: Invocation) -> list[InvocationEvent]:
    """The events not yet reported, oldest first.

    While FC's numbering holds, those above the high-water mark. Once FC renumbered the events
    (the one at the mark is gone, or is another event), the mark means nothing: the events after
    the last one reported are new, found by its status and time, or if it is gone too, by time.
    """
    if _numbering_holds(before, current):
        return new_events(current, before.event_high_water)
    unique = {(e.event_id, e.status, e.timestamp_ms): e for e in current.events}
    events = [unique[key] for key in sorted(unique)]
    last = (before.last_event_status, before.last_event_ms)
    anchors = [i for i, e in enumerate(events) if (e.status, e.timestamp_ms) == last]
    later = [i for i, e in enumerate(events) if e.timestamp_ms > last[1]]
    # Without an anchor, all from the first later event on: the last one returned is then the
    # last listed, so the same body polled again finds it as the anchor with nothing after it.
    start = anchors[-1] + 1 if anchors else (later[0] if later else len(events))
    return events[start:]


def _numbering_holds(before: Snapshot, current: Invocation) -> bool:
    """Whether eventIds still mean what they meant when the high-water mark was set."""
    mark, last = before.event_high_water, (before.last_event_status, before.last_event_ms)
    if not mark or last == ("", 0):
        return True  # nothing reported yet, or a snapshot that does not say what is at the mark
    at_mark = next((e for e in current.events if e.event_id == mark), None)
    if at_mark is None:  # gone: FC dropped old events (ids still go up) or renumbered downward
        return not current.events or max(e.event_id for e in current.events) > mark
    return (at_mark.status, at_mark.timestamp_ms) == last


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
    poll = _Poll(ref, observed_ms, current, InvocationSummary.of(current), labels)
    events = unseen_events(before, current)
    change = _status_change(before, poll)
    # The order is part of the contract: recovery first, then events, then the status change.
    transitions = [*_recovered(before, poll), *(_event(before, poll, e) for e in events)]
    if change is not None:
        transitions.append(change)
    status_changes = before.status_changes + (0 if change is None else 1)
    after = _after_poll(before, current, events, status_changes, observed_ms)
    return settle(before, after, transitions, observed_ms)


@dataclass(frozen=True, slots=True)
class _Poll:
    """One successful poll: what every transition derived from it carries."""

    ref: InvocationRef
    observed_ms: int
    current: Invocation
    summary: InvocationSummary
    labels: Mapping[str, str] | None

    def transition(
        self,
        kind: TransitionType,
        key: tuple[object, ...],
        *,
        previous_status: str | None = None,
        event: InvocationEvent | None = None,
    ) -> Transition:
        return make_transition(
            self.ref,
            kind,
            key,
            observed_ms=self.observed_ms,
            status=self.current.status,
            previous_status=previous_status,
            event=event,
            invocation=self.summary,
            labels=self.labels,
        )


def _recovered(before: Snapshot, poll: _Poll) -> list[Transition]:
    """A poll succeeded while ``poll_failing`` stood: close that episode (keyed by its number)."""
    if not before.failing:
        return []
    return [poll.transition(TransitionType.POLL_RECOVERED, (before.failing_episode,))]


def _event(before: Snapshot, poll: _Poll, event: InvocationEvent) -> Transition:
    """One new FC event (``event_key`` says how it is keyed)."""
    key = event_key(event, before.event_high_water)
    return poll.transition(TransitionType.EVENT, key, event=event)


def _status_change(before: Snapshot, poll: _Poll) -> Transition | None:
    """The status or the retry count moved; a retry within one status is a change too."""
    current = poll.current
    if (before.status, before.already_retried_times) == (
        current.status,
        current.already_retried_times,
    ):
        return None
    key = (
        before.status,
        current.status,
        current.already_retried_times,
        before.status_changes + 1,
    )
    return poll.transition(TransitionType.STATUS_CHANGED, key, previous_status=before.status)


def _after_poll(
    before: Snapshot,
    current: Invocation,
    events: list[InvocationEvent],
    status_changes: int,
    observed_ms: int,
) -> Snapshot:
    """The snapshot after a successful poll: a success also ends not-found and failing."""
    last_event = events[-1] if events else None
    status_since_ms, stuck_reported = _status_clock(before, current, observed_ms)
    return replace(
        before,
        status=current.status,
        already_retried_times=current.already_retried_times,
        status_changes=status_changes,
        # The highest id ever reported: after FC renumbers downward, ids up to it stay taken.
        event_high_water=max([before.event_high_water, *(e.event_id for e in events)]),
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


def _status_clock(before: Snapshot, current: Invocation, observed_ms: int) -> tuple[int, int]:
    """(status_since_ms, stuck_reported): a new status restarts the stuck clock and its count.

    The clock starts at the latest event in the new status, so a status entered long before
    the first poll is not mistaken for a fresh one; without such an event, at ``observed_ms``.
    """
    if before.status == current.status:
        return before.status_since_ms, before.stuck_reported
    matching = [e.timestamp_ms for e in current.events if e.status == current.status]
    return (max(matching) if matching and max(matching) > 0 else observed_ms), 0


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
        # Never seen vs. seen and then gone (records expire): two different facts.
        seen = "seen" if before.status else "never-seen"
        transitions.append(
            make_transition(
                ref,
                TransitionType.NOT_FOUND,
                (seen,),
                observed_ms=observed_ms,
                status=before.status,
                detail=f"FC answered not-found {count} times in a row",
                labels=labels,
            )
        )
    after = replace(
        before, not_found_count=count, first_not_found_ms=first_ms, not_found_reported=reported
    )
    return settle(before, after, transitions, observed_ms)


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
    transition = make_transition(
        ref,
        TransitionType.POLL_FAILING,
        (episode,),
        observed_ms=observed_ms,
        status=before.status,
        detail=f"{consecutive_failures} polls in a row failed; last: {detail}",
        labels=labels,
    )
    after = replace(before, failing=True, failing_episode=episode)
    return settle(before, after, [transition], observed_ms)


STUCK_STATUSES = frozenset({Status.ENQUEUED, Status.DEQUEUED, Status.RUNNING})


def stuck(
    previous: Snapshot | None,
    *,
    ref: InvocationRef,
    now_ms: int,
    stuck_after_s: float,
    repeat_s: float | None,
    labels: Mapping[str, str] | None = None,
    age_s: float | None = None,
) -> DiffResult:
    """Report an invocation in Enqueued, Dequeued or Running past ``stuck_after_s`` (``age_s``
    on a steady clock, else now_ms - status_since_ms), then every ``repeat_s``: each a new id."""
    before = previous or Snapshot()
    if before.status not in STUCK_STATUSES or not before.status_since_ms:
        return DiffResult(before, ())
    age_s = (now_ms - before.status_since_ms) / 1000 if age_s is None else age_s
    reminders = int((age_s - stuck_after_s) // repeat_s) if repeat_s else 0
    due = 0 if age_s < stuck_after_s else 1 + reminders
    if before.stuck_reported >= due:
        return DiffResult(before, ())
    transition = make_transition(
        ref,
        TransitionType.STUCK,
        (before.status, before.status_changes, due),
        observed_ms=now_ms,
        status=before.status,
        detail=f"{before.status} for {int(age_s)} s (stuck_after_s: {stuck_after_s:g})",
        labels=labels,
    )
    return settle(before, replace(before, stuck_reported=due), [transition], now_ms)
