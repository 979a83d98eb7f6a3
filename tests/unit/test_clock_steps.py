"""Wall-clock steps of an hour either way, against the pure decisions that measure time.

A ``SteppingClock`` is what faketime did to the daemon: its monotonic clock moves as the test
says, and its wall clock moves with it but can also be stepped. Durations and due times are
read on ``steady(clock)``; each test also shows what the wall clock would have decided.
"""

from __future__ import annotations

import random

import pytest

from watcher.core import decide
from watcher.core.clock import OneClock, Since, SteadyClock, SystemClock, steady
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import Snapshot, TransitionType
from watcher.delivery.health import Blame
from watcher.delivery.hold import hold_ms
from watcher.delivery.record import Dead, DeliveryPolicy, Retry, verdict
from watcher.delivery.select import bounded, next_due_ms, select_due
from watcher.delivery.sinks.base import FailureKind, SinkError
from watcher.store.records import OutboxRow

HOUR_MS = 3_600_000
BASE_MS = 1_795_680_000_000
REF = InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), "job-1")
REFUSED = SinkError("cannot reach", retryable=True, kind=FailureKind.TRANSPORT)
SERVER_ERROR = SinkError("HTTP 503: down", retryable=True)


class SteppingClock:
    """Monotonic time that moves only when told; a wall clock that follows it, and can be
    stepped on top."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.step_ms = 0

    def monotonic(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return BASE_MS + int(self.now_s * 1000) + self.step_ms

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def row(created_ms: int, *, due_ms: int | None = None, attempts: int = 0) -> OutboxRow:
    due = created_ms if due_ms is None else due_ms
    return OutboxRow(1, "tr_1", "a", attempts, due, created_ms, row_failures=attempts)


def test_steady_time_does_not_follow_wall_steps() -> None:
    """Steady time starts at the wall clock and then moves with the monotonic clock only."""
    clock = SteppingClock()
    now = steady(clock)
    assert now() == BASE_MS
    clock.advance(5)
    clock.step_ms += HOUR_MS
    assert now() == BASE_MS + 5_000
    clock.step_ms -= 2 * HOUR_MS
    clock.advance(1)
    assert now() == BASE_MS + 6_000
    assert clock.wall_ms() == BASE_MS + 6_000 - HOUR_MS


def test_system_and_injected_clocks_keep_their_own_steady_time() -> None:
    """The system clock's steady time is shared by every instance; a single injected time is
    read as is."""
    system = SystemClock()
    assert isinstance(system, SteadyClock)
    assert abs(steady(system)() - system.wall_ms()) < 2_000  # no step in a test run
    assert abs(SystemClock().steady_ms() - system.steady_ms()) < 50
    assert steady(OneClock(lambda: 42))() == 42


@pytest.mark.parametrize("step_ms", [HOUR_MS, -HOUR_MS])
def test_no_early_dead_letter_after_a_step(step_ms: int) -> None:
    """A row 15 s old is not "too old" for a 60 s max age, whichever way the wall clock went;
    read on the wall clock, a forward step made it an hour old."""
    clock = SteppingClock()
    now = steady(clock)
    pending = row(now())
    clock.advance(15)
    clock.step_ms += step_ms
    policy = DeliveryPolicy(max_age_s=60)
    decided = verdict(pending, SERVER_ERROR, policy, now(), random.Random(0))
    assert isinstance(decided, Retry)
    if step_ms > 0:
        wall = verdict(pending, SERVER_ERROR, policy, clock.wall_ms(), random.Random(0))
        assert wall == Dead("too old")  # the fault the steady clock removes


@pytest.mark.parametrize("step_ms", [HOUR_MS, -HOUR_MS])
def test_no_hour_long_hold_of_a_retry_after_a_step(step_ms: int) -> None:
    """A retry written at the backoff is due after the backoff, not an hour later (a backward
    step, read on the wall clock) nor early."""
    clock = SteppingClock()
    now = steady(clock)
    policy = DeliveryPolicy(backoff_base_s=8, backoff_cap_s=10)
    decided = verdict(row(now()), SERVER_ERROR, policy, now(), random.Random(3), Blame.ROW)
    assert isinstance(decided, Retry)
    retried = row(now(), due_ms=now() + int(decided.delay_s * 1000), attempts=1)
    wall_due_ms = clock.wall_ms() + int(decided.delay_s * 1000)
    clock.step_ms += step_ms
    assert select_due([retried], now(), 10) == []
    clock.advance(decided.delay_s)
    assert select_due([retried], now(), 10) == [retried]
    if step_ms < 0:
        assert wall_due_ms - clock.wall_ms() > HOUR_MS - 20_000  # the fault


@pytest.mark.parametrize("step_ms", [HOUR_MS, -HOUR_MS])
def test_no_false_or_late_stuck_after_a_step(step_ms: int) -> None:
    """Running since 5 s before it was first seen, stuck after 60 s: no report at 15 s after
    a step either way, one at 60 s, and its message tells the true age."""
    clock = SteppingClock()
    now = steady(clock)
    event_ms = clock.wall_ms() - 5_000
    snapshot = Snapshot(status="Running", status_since_ms=event_ms, status_changes=1)
    since = Since(event_ms, clock.wall_ms(), now())

    def check() -> decide.DiffResult:
        age_s = since.age_ms(now()) / 1000
        return decide.stuck(
            snapshot, ref=REF, now_ms=clock.wall_ms(), stuck_after_s=60, repeat_s=None, age_s=age_s
        )

    clock.advance(10)
    clock.step_ms += step_ms
    assert check().transitions == ()
    wall_age_s = (clock.wall_ms() - event_ms) / 1000
    assert (wall_age_s >= 60) == (step_ms > 0)  # the wall clock saw a false stuck, or none
    clock.advance(45)
    (transition,) = check().transitions
    assert transition.type is TransitionType.STUCK
    assert transition.detail.startswith("Running for 60 s")
    assert transition.observed_ms == clock.wall_ms()  # recorded on the wall clock


@pytest.mark.parametrize(
    ("seen_wall_ms", "at_ms", "steady_ms", "age_ms"),
    [
        (10_000, 4_000, 500, 6_000),  # seen 6 s old, no steady time since
        (10_000, 4_000, 2_500, 8_000),
        (10_000, 12_000, 3_500, 3_000),  # stamped ahead of our clock: 0 when seen
        (10_000, 4_000, 100, 6_000),  # steady time never counts backwards
    ],
)
def test_since_age(seen_wall_ms: int, at_ms: int, steady_ms: int, age_ms: int) -> None:
    assert Since(at_ms, seen_wall_ms, 500).age_ms(steady_ms) == age_ms


def test_a_due_time_from_another_clock_waits_at_most_the_backoff_cap() -> None:
    """A retry stored by a previous run an hour ahead of this run's steady clock (its wall
    clock was stepped back): held at most the cap from when first read, and the bound holds
    on later passes; a due time within the cap is left alone."""
    now_ms, cap_ms = BASE_MS, 600_000
    far = OutboxRow(1, "tr_1", "a", 3, now_ms + HOUR_MS + 5_000, now_ms - 60_000, row_failures=3)
    near = OutboxRow(2, "tr_2", "b", 1, now_ms + 30_000, now_ms - 60_000, row_failures=1)
    rows, bounds = bounded([far, near], now_ms, cap_ms, {})
    assert [r.next_attempt_ms for r in rows] == [now_ms + cap_ms, near.next_attempt_ms]
    assert next_due_ms(rows, now_ms) == 30_000
    later_ms = now_ms + 300_000
    rows, bounds = bounded([far, near], later_ms, cap_ms, bounds)
    assert rows[0].next_attempt_ms == now_ms + cap_ms  # not pushed on by the later read
    rows, _ = bounded([far], now_ms + cap_ms, cap_ms, bounds)
    assert select_due(rows, now_ms + cap_ms, 10) == rows
    assert next_due_ms(bounded([far], now_ms, cap_ms, {})[0], now_ms) == cap_ms


def test_a_bound_ends_with_the_next_attempt() -> None:
    """Once the row is tried again, the due time this process writes holds, bound or not."""
    now_ms, cap_ms = BASE_MS, 10_000
    stale = OutboxRow(1, "tr_1", "a", 2, now_ms + HOUR_MS, now_ms, row_failures=2)
    _, bounds = bounded([stale], now_ms, cap_ms, {})
    retried = OutboxRow(1, "tr_1", "a", 3, now_ms + 20_000 + 8_000, now_ms, row_failures=3)
    rows, bounds = bounded([retried], now_ms + 20_000, cap_ms, bounds)
    assert rows == [retried]
    assert bounds == {}


def test_a_never_tried_row_from_another_clock_is_due_and_groups_briefly() -> None:
    """A row ``redeliver`` (or a previous run) stamped an hour ahead of our steady clock: due
    at once, and its grouping wait is the sink's, not an hour and ten seconds."""
    now_ms = BASE_MS
    ahead = row(now_ms + HOUR_MS)
    (read,), _ = bounded([ahead], now_ms, 600_000, {})
    assert read.next_attempt_ms <= now_ms
    assert read.created_ms == now_ms
    assert hold_ms(read, now_ms, rate_wait_s=0, group_wait_s=10, flush=False) == 10_000
    assert hold_ms(ahead, now_ms, rate_wait_s=0, group_wait_s=10, flush=False) > HOUR_MS
