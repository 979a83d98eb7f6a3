"""The pure decisions after a poll: table-driven cases and properties over any poll sequence."""

from __future__ import annotations

import json
import random
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Snapshot, Transition, TransitionType, transition_id

REF = InvocationRef(FunctionRef(Api.FC2, "fn", "svc", "LATEST"), "job-1")


def inv(status: str, retries: int = 0, events: list[tuple[int, str]] | None = None) -> Invocation:
    return Invocation.model_validate(
        {
            "status": status,
            "alreadyRetriedTimes": retries,
            "events": [
                {"eventId": i, "status": s, "timestamp": 1000 * i, "eventDetail": ""}
                for i, s in (events or [])
            ],
        }
    )


def timed(status: str, events: list[tuple[int, str, int]], retries: int = 0) -> Invocation:
    """An invocation whose events carry their own timestamps, so they can be renumbered."""
    return Invocation.model_validate(
        {
            "status": status,
            "alreadyRetriedTimes": retries,
            "events": [
                {"eventId": i, "status": s, "timestamp": ms, "eventDetail": ""}
                for i, s, ms in events
            ],
        }
    )


def kinds(transitions: tuple[Transition, ...]) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    for t in transitions:
        if t.type is TransitionType.EVENT:
            assert t.event is not None
            out.append(("event", t.event.event_id, t.event.status))
        else:
            out.append((t.type.value.split(".")[1], t.previous_status, t.status))
    return out


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (
            None,
            inv("Enqueued", events=[(1, "Enqueued")]),
            [("event", 1, "Enqueued"), ("status_changed", None, "Enqueued")],
        ),
        (
            None,
            inv("Failed", 3, [(1, "Running"), (2, "Failed")]),
            [("event", 1, "Running"), ("event", 2, "Failed"), ("status_changed", None, "Failed")],
        ),
        (
            Snapshot(status="Running", event_high_water=2),
            inv("Running", events=[(1, "E"), (2, "R")]),
            [],
        ),
        (
            Snapshot(status="Running", event_high_water=2),
            inv("Succeeded", events=[(1, "E"), (2, "R"), (3, "Succeeded")]),
            [("event", 3, "Succeeded"), ("status_changed", "Running", "Succeeded")],
        ),
        (
            Snapshot(status="Running", event_high_water=1),
            inv("Running", events=[(3, "C"), (2, "B"), (3, "C"), (1, "A")]),
            [("event", 2, "B"), ("event", 3, "C")],
        ),
        (Snapshot(status="Running", event_high_water=5), inv("Running", events=[(1, "A")]), []),
        (
            Snapshot(status="Running", already_retried_times=0),
            inv("Running", 1),
            [("status_changed", "Running", "Running")],
        ),
        (
            Snapshot(status="Running", failing=True, failing_episode=2),
            inv("Running"),
            [("poll_recovered", None, "Running")],
        ),
        (Snapshot(status="Running"), inv("Archived"), [("status_changed", "Running", "Archived")]),
    ],
    ids=[
        "first-sighting",
        "first-sighting-already-failed",
        "unchanged",
        "finished",
        "duplicates-and-reordering",
        "events-below-high-water",
        "retry-within-status",
        "recovered",
        "unknown-status",
    ],
)
def test_diff_table(
    previous: Snapshot | None, current: Invocation, expected: list[tuple[str, Any, Any]]
) -> None:
    """Each case yields exactly the listed transitions, in order."""
    result = decide.diff(previous, current, ref=REF, observed_ms=5)
    assert kinds(result.transitions) == expected


def test_recurring_status_gets_new_ids() -> None:
    """Running, Retrying, Running: the second Running is its own transition with its own id."""
    first = decide.diff(None, inv("Running"), ref=REF, observed_ms=1)
    second = decide.diff(first.snapshot, inv("Retrying", 1), ref=REF, observed_ms=2)
    third = decide.diff(second.snapshot, inv("Running", 1), ref=REF, observed_ms=3)
    ids = [t.id for r in (first, second, third) for t in r.transitions]
    assert len(ids) == len(set(ids)) == 3


def test_unchanged_poll_changes_nothing() -> None:
    """The same body twice: no transitions and nothing to write."""
    first = decide.diff(None, inv("Running", events=[(1, "Running")]), ref=REF, observed_ms=1)
    again = decide.diff(
        first.snapshot, inv("Running", events=[(1, "Running")]), ref=REF, observed_ms=2
    )
    assert again.transitions == ()
    assert not again.changed
    assert again.snapshot == first.snapshot


def test_transition_carries_the_invocation_snapshot() -> None:
    """A status change carries status, retries, times and the error, so receivers need no call."""
    body = {
        "status": "Failed",
        "alreadyRetriedTimes": 3,
        "startedTime": 10,
        "endTime": 20,
        "durationMs": 10,
        "invocationErrorMessage": "boom",
        "invocationPayload": "x" * 2000,
    }
    result = decide.diff(None, Invocation.model_validate(body), ref=REF, observed_ms=1)
    summary = result.transitions[-1].invocation
    assert summary is not None
    assert (summary.status, summary.already_retried_times, summary.error_message) == (
        "Failed",
        3,
        "boom",
    )
    assert (summary.started_ms, summary.end_ms, summary.duration_ms) == (10, 20, 10)
    assert len(summary.payload_excerpt) == 512


@pytest.mark.parametrize(
    ("count_before", "report_after", "reported"),
    [(0, 5, False), (3, 5, False), (4, 5, True), (0, 1, True)],
)
def test_not_found_is_reported_once_after_the_grace(
    count_before: int, report_after: int, reported: bool
) -> None:
    """Not-found is reported on the Nth answer in a row, once."""
    previous = Snapshot(not_found_count=count_before)
    result = decide.not_found(previous, ref=REF, observed_ms=9, report_after=report_after)
    assert [t.type for t in result.transitions] == ([TransitionType.NOT_FOUND] if reported else [])
    assert result.changed
    again = decide.not_found(result.snapshot, ref=REF, observed_ms=10, report_after=report_after)
    if reported:
        assert again.transitions == ()
        assert not again.changed


def test_not_found_after_being_seen_is_a_different_fact() -> None:
    """Gone after being seen (records expire) has another id than never seen."""
    never = decide.not_found(None, ref=REF, observed_ms=1, report_after=1).transitions[0]
    seen = decide.not_found(
        Snapshot(status="Succeeded"), ref=REF, observed_ms=1, report_after=1
    ).transitions[0]
    assert never.id != seen.id


def test_poll_failing_once_per_episode_with_new_ids() -> None:
    """poll_failing fires at the threshold, once; after recovery the next episode has a new id."""
    below = decide.poll_failed(
        None, ref=REF, observed_ms=1, consecutive_failures=2, threshold=3, detail="x"
    )
    assert below.transitions == ()
    failing = decide.poll_failed(
        None, ref=REF, observed_ms=1, consecutive_failures=3, threshold=3, detail="x"
    )
    assert [t.type for t in failing.transitions] == [TransitionType.POLL_FAILING]
    more = decide.poll_failed(
        failing.snapshot, ref=REF, observed_ms=2, consecutive_failures=9, threshold=3, detail="x"
    )
    assert more.transitions == ()
    recovered = decide.diff(failing.snapshot, inv("Running"), ref=REF, observed_ms=3)
    assert TransitionType.POLL_RECOVERED in [t.type for t in recovered.transitions]
    second = decide.poll_failed(
        recovered.snapshot, ref=REF, observed_ms=4, consecutive_failures=3, threshold=3, detail="y"
    )
    assert second.transitions[0].id != failing.transitions[0].id


def test_a_lone_surrogate_in_a_failure_detail_is_replaced() -> None:
    """FC's error body can escape a lone surrogate into the message a poll_failing quotes; the
    transition holds U+FFFD instead, so the outbox, webhooks and files can encode it."""
    failing = decide.poll_failed(
        None, ref=REF, observed_ms=1, consecutive_failures=3, threshold=3, detail="bad \ud800"
    )
    transition = failing.transitions[0]
    assert transition.detail.endswith("bad \ufffd")
    json.dumps(transition.to_dict(), ensure_ascii=False).encode()


# -- properties over any poll sequence ---------------------------------------------------------

STATUSES = [
    "Enqueued",
    "Dequeued",
    "Running",
    "Retrying",
    "Stopping",
    "Succeeded",
    "Failed",
    "Weird",
]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Invocation], int]:
    """FC's true history as a list of states, and a seed for how polls observe it."""
    statuses = draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=12))
    states: list[Invocation] = []
    events: list[tuple[int, str]] = []
    retries = 0
    for status in statuses:
        if status == "Retrying":
            retries += 1
        events.append((len(events) + 1, status))
        states.append(inv(status, retries, list(events)))
    return states, draw(st.integers(0, 2**32))


def _observe(states: list[Invocation], seed: int) -> list[Invocation]:
    """Polls see the history in order, may skip or repeat states, and get events shuffled."""
    rng = random.Random(seed)
    index = 0
    seen = []
    while index < len(states):
        state = states[index]
        shuffled = list(state.events)
        rng.shuffle(shuffled)
        if shuffled and rng.random() < 0.3:
            shuffled.append(rng.choice(shuffled))  # a duplicate
        seen.append(state.model_copy(update={"events": tuple(shuffled)}))
        index += rng.choice([0, 1, 1, 2])
    seen.append(states[-1])
    return seen


def _run(polls: list[Invocation]) -> tuple[list[Transition], list[Snapshot | None]]:
    snapshot: Snapshot | None = None
    emitted: list[Transition] = []
    before: list[Snapshot | None] = []
    for number, poll in enumerate(polls):
        before.append(snapshot)
        result = decide.diff(snapshot, poll, ref=REF, observed_ms=number)
        emitted.extend(result.transitions)
        snapshot = result.snapshot
    return emitted, before


@settings(max_examples=300, deadline=None)
@given(histories())
def test_no_transition_lost_or_duplicated(history: tuple[list[Invocation], int]) -> None:
    """For any poll sequence: every event once, unique ids, a consistent status chain."""
    states, seed = history
    polls = _observe(states, seed)
    emitted, _ = _run(polls)
    ids = [t.id for t in emitted]
    assert len(ids) == len(set(ids))
    event_ids = [t.event.event_id for t in emitted if t.event is not None]
    assert event_ids == [event_id for event_id, _ in ((e.event_id, e) for e in states[-1].events)]
    changes = [t for t in emitted if t.type is TransitionType.STATUS_CHANGED]
    assert changes[0].previous_status is None
    for earlier, later in pairwise(changes):
        assert later.previous_status == earlier.status
    assert changes[-1].status == states[-1].status


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_ids_are_stable_across_reruns_and_crashes(
    history: tuple[list[Invocation], int], data: st.DataObject
) -> None:
    """Re-running, or re-diffing a poll from the snapshot before it (a crash before the commit),
    gives the same ids for the same facts."""
    states, seed = history
    polls = _observe(states, seed)
    emitted, before = _run(polls)
    again, _ = _run(polls)
    assert [t.id for t in emitted] == [t.id for t in again]
    crash_at = data.draw(st.integers(0, len(polls) - 1))
    original = decide.diff(before[crash_at], polls[crash_at], ref=REF, observed_ms=crash_at)
    replayed = decide.diff(before[crash_at], polls[crash_at], ref=REF, observed_ms=10_000)
    assert [t.id for t in original.transitions] == [t.id for t in replayed.transitions]
    by_id = {t.id: t for t in emitted}
    for transition in replayed.transitions:
        if transition.id in by_id:
            earlier = by_id[transition.id]
            assert (earlier.type, earlier.status, earlier.previous_status, earlier.event) == (
                transition.type,
                transition.status,
                transition.previous_status,
                transition.event,
            )


@settings(max_examples=200, deadline=None)
@given(histories(), st.lists(st.sampled_from(["poll", "fail", "stuck"]), min_size=1, max_size=30))
def test_no_id_repeats_across_failures_and_stuck_reminders(
    history: tuple[list[Invocation], int], steps: list[str]
) -> None:
    """Polls interleaved with failing polls and stuck checks: every id once, every failing
    episode recovered at most once, and every event still emitted exactly once."""
    states, seed = history
    polls = iter(_observe(states, seed))
    snapshot: Snapshot | None = None
    emitted: list[Transition] = []
    for number, step in enumerate(steps):
        if step == "poll":
            poll = next(polls, states[-1])
            result = decide.diff(snapshot, poll, ref=REF, observed_ms=number)
        elif step == "fail":
            result = decide.poll_failed(
                snapshot,
                ref=REF,
                observed_ms=number,
                consecutive_failures=3,
                threshold=3,
                detail="x",
            )
        else:
            result = decide.stuck(
                snapshot, ref=REF, now_ms=10_000_000 * number, stuck_after_s=1, repeat_s=5
            )
        emitted.extend(result.transitions)
        snapshot = result.snapshot
    for poll in polls:  # drain: the watcher keeps polling until it has seen the end
        result = decide.diff(snapshot, poll, ref=REF, observed_ms=len(steps))
        emitted.extend(result.transitions)
        snapshot = result.snapshot
    final = decide.diff(snapshot, states[-1], ref=REF, observed_ms=len(steps) + 1)
    emitted.extend(final.transitions)
    ids = [t.id for t in emitted]
    assert len(ids) == len(set(ids))
    event_ids = [t.event.event_id for t in emitted if t.event is not None]
    assert event_ids == [event.event_id for event in states[-1].events]
    failing = [t for t in emitted if t.type is TransitionType.POLL_FAILING]
    recovered = [t for t in emitted if t.type is TransitionType.POLL_RECOVERED]
    assert len(failing) - len(recovered) in (0, 1)
    assert not final.snapshot.failing


def test_transition_ids_are_pinned() -> None:
    """Ids are persisted and are the idempotency key: the same facts must give these exact ids
    forever, or an upgrade would deliver every alert again."""
    recovering = Snapshot(
        status="Running", failing=True, failing_episode=2, event_high_water=1, status_changes=4
    )
    result = decide.diff(
        recovering, inv("Retrying", 1, [(1, "Running"), (2, "Retrying")]), ref=REF, observed_ms=5
    )
    never = decide.not_found(None, ref=REF, observed_ms=1, report_after=1)
    seen = decide.not_found(Snapshot(status="Succeeded"), ref=REF, observed_ms=1, report_after=1)
    failing = decide.poll_failed(
        Snapshot(failing_episode=2),
        ref=REF,
        observed_ms=1,
        consecutive_failures=3,
        threshold=3,
        detail="x",
    )
    stuck = decide.stuck(
        Snapshot(status="Running", status_since_ms=1000, status_changes=3),
        ref=REF,
        now_ms=70_000,
        stuck_after_s=60,
        repeat_s=None,
    )
    transitions = [*result.transitions, *never.transitions, *seen.transitions]
    transitions += [*failing.transitions, *stuck.transitions]
    assert [(t.type.value, t.id) for t in transitions] == [
        ("invocation.poll_recovered", "tr_15626ee33d97ef1f116441673155e7fb6e149be8"),
        ("invocation.event", "tr_e264b1a1d22ef90177f4be0c1c906e23666a5578"),
        ("invocation.status_changed", "tr_5fde8408b5668cb4167e8a1fa5935f83f7631166"),
        ("invocation.not_found", "tr_4d2e1f9fa770ff49b076869f0d1b43873c046245"),
        ("invocation.not_found", "tr_7fd6829069ef2451397de6bde3135158179ac0ce"),
        ("invocation.poll_failing", "tr_92467ace1477dd1cedc41c4208d0ebe6408e6c1b"),
        ("invocation.stuck", "tr_82b65b3747e834cf8b5ed850fa233cb6005c2804"),
    ]


def test_transition_round_trips_through_its_dict() -> None:
    """to_dict / from_dict are inverses (the outbox stores the dict)."""
    result = decide.diff(
        None, inv("Failed", 2, [(1, "Failed")]), ref=REF, observed_ms=7, labels={"team": "a"}
    )
    for transition in result.transitions:
        assert Transition.from_dict(transition.to_dict()) == transition


@pytest.mark.parametrize(
    ("status", "age_s", "reported", "repeat_s", "expected_due"),
    [
        ("Running", 59, 0, None, None),
        ("Running", 60, 0, None, 1),
        ("Running", 3600, 1, None, None),
        ("Enqueued", 61, 0, None, 1),
        ("Dequeued", 61, 0, None, 1),
        ("Retrying", 9999, 0, None, None),
        ("Failed", 9999, 0, None, None),
        ("Running", 60 + 29, 1, 30, None),
        ("Running", 60 + 30, 1, 30, 2),
        ("Running", 60 + 95, 2, 30, 4),
    ],
)
def test_stuck_table(
    status: str, age_s: float, reported: int, repeat_s: float | None, expected_due: int | None
) -> None:
    """Stuck fires after stuck_after_s in a waiting or running status, then every repeat_s."""
    previous = Snapshot(status=status, status_since_ms=1_000_000, stuck_reported=reported)
    result = decide.stuck(
        previous, ref=REF, now_ms=1_000_000 + int(age_s * 1000), stuck_after_s=60, repeat_s=repeat_s
    )
    if expected_due is None:
        assert result.transitions == ()
        assert not result.changed
    else:
        assert [t.type for t in result.transitions] == [TransitionType.STUCK]
        assert result.snapshot.stuck_reported == expected_due


def test_stuck_reminders_have_distinct_ids_and_reset_on_change() -> None:
    """Each reminder is a new id; a status change restarts the clock and the count."""
    running = decide.diff(None, inv("Running", events=[(1, "Running")]), ref=REF, observed_ms=0)
    assert running.snapshot.status_since_ms == 1000  # the Running event's timestamp
    first = decide.stuck(running.snapshot, ref=REF, now_ms=62_000, stuck_after_s=60, repeat_s=10)
    second = decide.stuck(first.snapshot, ref=REF, now_ms=72_000, stuck_after_s=60, repeat_s=10)
    assert first.transitions[0].id != second.transitions[0].id
    moved = decide.diff(
        second.snapshot,
        inv("Retrying", 1, [(1, "Running"), (2, "Retrying")]),
        ref=REF,
        observed_ms=80_000,
    )
    assert moved.snapshot.stuck_reported == 0
    assert moved.snapshot.status_since_ms == 2000


# -- FC renumbering events ----------------------------------------------------------------------

REPORTED_UP_TO_13 = Snapshot(
    status="Running", event_high_water=13, last_event_status="Running", last_event_ms=3000
)
RENUMBERED = [(1, "Enqueued", 1000), (2, "Running", 2000), (3, "Running", 3000)]


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (
            REPORTED_UP_TO_13,
            timed("Failed", [*RENUMBERED, (4, "Failed", 4000)]),
            [("event", 4, "Failed"), ("status_changed", "Running", "Failed")],
        ),
        (REPORTED_UP_TO_13, timed("Running", RENUMBERED), []),
        (
            REPORTED_UP_TO_13,
            timed("Failed", [(2, "Failed", 4000), (1, "Running", 3000), (2, "Failed", 4000)]),
            [("event", 2, "Failed"), ("status_changed", "Running", "Failed")],
        ),
        (
            REPORTED_UP_TO_13,
            timed("Failed", [(1, "Running", 2000), (2, "Retrying", 3500), (3, "Failed", 4000)]),
            [
                ("event", 2, "Retrying"),
                ("event", 3, "Failed"),
                ("status_changed", "Running", "Failed"),
            ],
        ),
        (
            Snapshot(
                status="Running",
                event_high_water=3,
                last_event_status="Running",
                last_event_ms=3000,
            ),
            timed("Failed", [(1, "Running", 3000), (2, "Failed", 4000), (3, "Failed", 5000)]),
            [
                ("event", 2, "Failed"),
                ("event", 3, "Failed"),
                ("status_changed", "Running", "Failed"),
            ],
        ),
        (
            Snapshot(
                status="Running",
                event_high_water=3,
                last_event_status="Running",
                last_event_ms=3000,
            ),
            timed("Failed", [(5, "Failed", 5000)]),
            [("event", 5, "Failed"), ("status_changed", "Running", "Failed")],
        ),
    ],
    ids=[
        "renumbered-downward",
        "renumbered-nothing-new",
        "renumbered-shuffled-and-repeated",
        "renumbered-last-reported-gone",
        "same-ids-other-events",
        "old-events-dropped-ids-still-rising",
    ],
)
def test_diff_when_fc_renumbers_events(
    previous: Snapshot, current: Invocation, expected: list[tuple[str, Any, Any]]
) -> None:
    """When eventIds no longer mean what they meant, events are new by content: those after the
    last one reported (or, if it is gone, later than it)."""
    result = decide.diff(previous, current, ref=REF, observed_ms=5)
    assert kinds(result.transitions) == expected
    again = decide.diff(result.snapshot, current, ref=REF, observed_ms=6)
    assert again.transitions == ()
    assert not again.changed


def test_a_renumbered_id_never_reuses_a_reported_events_transition_id() -> None:
    """Ids 1..5 reported, then FC drops three events and renumbers: the new events 3, 4 and 5 get
    ids of their own (event 5 would otherwise be dropped as a duplicate of the old event 5), and
    once the ids rise past every id reported, the plain eventId key is back."""
    old = [(i, "Running", 1000 * i) for i in range(1, 6)]
    new = [(i - 3, s, ms) for i, s, ms in old[3:]]  # events 4 and 5 as ids 1 and 2
    new += [(3, "Retrying", 6000), (4, "Running", 7000), (5, "Failed", 8000), (6, "Failed", 9000)]
    polls = [timed("Running", old)] + [
        timed(s, new[:n])
        for n, s in [(3, "Retrying"), (4, "Running"), (5, "Failed"), (6, "Failed")]
    ]
    emitted, _ = _run(polls + polls[-1:])
    events = [t for t in emitted if t.type is TransitionType.EVENT]
    assert [(t.event.event_id, t.event.timestamp_ms) for t in events if t.event] == [
        *((i, ms) for i, _, ms in old),
        (3, 6000),
        (4, 7000),
        (5, 8000),
        (6, 9000),
    ]
    ids = [t.id for t in emitted]
    assert len(ids) == len(set(ids))
    assert events[-1].id == transition_id(REF, TransitionType.EVENT, 6)


def test_renumbered_event_ids_are_pinned() -> None:
    """Ids are persisted: the key of an event at or below the high-water mark (its eventId,
    status and time) must give these ids forever."""
    result = decide.diff(
        REPORTED_UP_TO_13,
        timed("Failed", [*RENUMBERED, (4, "Failed", 4000)]),
        ref=REF,
        observed_ms=5,
    )
    assert [(t.type.value, t.id) for t in result.transitions] == [
        ("invocation.event", "tr_8ccaa8fb3f558fdc0c11a7fe2b0d334850b2e5ea"),
        ("invocation.status_changed", "tr_556ead46914df5e872b62bc7709b310f93b5b4b5"),
    ]


@st.composite
def renumbered_histories(draw: st.DrawFn) -> list[Invocation]:
    """Polls of a growing history whose eventIds FC renumbers downward now and then, keeping
    the events' content (status and a time unique to each); polls shuffle and repeat events."""
    statuses = draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=10))
    history = [(status, 1000 * (n + 1)) for n, status in enumerate(statuses)]
    offset = draw(st.integers(0, 20))
    rng = random.Random(draw(st.integers(0, 2**32)))
    polls: list[Invocation] = []
    for seen in range(1, len(history) + 1):
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.booleans()):
                offset = draw(st.integers(0, offset))  # renumbered: the ids go down (or stay)
            events = [(n + 1 + offset, s, ms) for n, (s, ms) in enumerate(history[:seen])]
            rng.shuffle(events)
            if events and rng.random() < 0.3:
                events.append(rng.choice(events))
            polls.append(timed(history[seen - 1][0], events))
    return polls


@settings(max_examples=300, deadline=None)
@given(renumbered_histories())
def test_renumbering_loses_and_repeats_nothing(polls: list[Invocation]) -> None:
    """For any downward renumbering: every event reported once (by content), unique ids, a
    consistent status chain, and the same body polled again reports and writes nothing."""
    snapshot: Snapshot | None = None
    emitted: list[Transition] = []
    for number, poll in enumerate(polls):
        result = decide.diff(snapshot, poll, ref=REF, observed_ms=number)
        emitted.extend(result.transitions)
        again = decide.diff(result.snapshot, poll, ref=REF, observed_ms=number)
        assert again.transitions == ()
        assert not again.changed
        snapshot = result.snapshot
    ids = [t.id for t in emitted]
    assert len(ids) == len(set(ids))
    reported = [(t.event.status, t.event.timestamp_ms) for t in emitted if t.event is not None]
    final = sorted({(e.timestamp_ms, e.status) for e in polls[-1].events})
    assert reported == [(status, ms) for ms, status in final]
    changes = [t for t in emitted if t.type is TransitionType.STATUS_CHANGED]
    for earlier, later in pairwise(changes):
        assert later.previous_status == earlier.status
    assert changes[-1].status == polls[-1].status
    assert snapshot is not None
    assert snapshot.last_event_status == polls[-1].status


@settings(max_examples=200, deadline=None)
@given(histories())
def test_event_ids_are_the_eventid_key_while_numbering_holds(
    history: tuple[list[Invocation], int],
) -> None:
    """The ids persisted before renumbering was handled: while eventIds rise, an event's id is
    ``transition_id(ref, EVENT, eventId)``, byte for byte."""
    states, seed = history
    emitted, _ = _run(_observe(states, seed))
    for transition in emitted:
        if transition.event is not None:
            expected = transition_id(REF, TransitionType.EVENT, transition.event.event_id)
            assert transition.id == expected
