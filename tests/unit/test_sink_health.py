"""Sink health on its own: whose fault a failure was (tables), the circuit's decisions, the
retry verdict by blame, and the probe's place in selection."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from watcher.delivery.health import (
    Blame,
    Circuit,
    Gate,
    ProbeTiming,
    after_failure,
    after_success,
    blame,
    gate,
    restored,
)
from watcher.delivery.record import Dead, DeliveryPolicy, Retry, verdict
from watcher.delivery.select import plan
from watcher.delivery.sinks import Batching
from watcher.delivery.sinks._http import Reply, classify
from watcher.delivery.sinks.base import FailureKind, SinkError
from watcher.store.records import OutboxRow, SinkHealthRecord

TRANSPORT = SinkError("cannot reach", retryable=True, kind=FailureKind.TRANSPORT)
STATUS_500 = SinkError("HTTP 500: boom", retryable=True)
GONE_410 = SinkError("HTTP 410: gone", retryable=False)
SLOW_429 = SinkError("HTTP 429: slow down", retryable=True, retry_after_s=30.0)
OPEN = Circuit(open=True, since_ms=1, probe_due_ms=5)
A = frozenset({"a"})
AB = frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("status", "body_code", "retry_after", "kind", "retry_after_s"),
    [
        (500, None, None, FailureKind.STATUS, None),
        (502, None, None, FailureKind.STATUS, None),
        (503, None, 3.0, FailureKind.STATUS, 3.0),
        (429, None, None, FailureKind.STATUS, None),
        (429, None, 17.0, FailureKind.STATUS, 17.0),
        (408, None, None, FailureKind.STATUS, None),
        (501, None, None, FailureKind.PERMANENT, None),
        (410, None, None, FailureKind.PERMANENT, None),
        (400, None, 5.0, FailureKind.PERMANENT, None),
        (200, 130101, None, FailureKind.STATUS, 60.0),  # a robot's throttling code
        (200, 310000, None, FailureKind.PERMANENT, None),  # a robot's other error codes
    ],
)
def test_classify_gives_each_answer_its_kind(
    status: int,
    body_code: int | None,
    retry_after: float | None,
    kind: FailureKind,
    retry_after_s: float | None,
) -> None:
    error = classify(
        Reply(status, "x", retry_after), body_code=body_code, throttle_codes=frozenset({130101})
    )
    assert error is not None
    assert (error.kind, error.retry_after_s) == (kind, retry_after_s)


def test_a_sink_error_without_a_kind_is_a_status_or_permanent() -> None:
    assert SinkError("disk full", retryable=True).kind is FailureKind.STATUS
    assert SinkError("x", retryable=False, kind=FailureKind.TRANSPORT).kind is (
        FailureKind.PERMANENT
    )


@pytest.mark.parametrize(
    ("error", "keys", "circuit", "expected"),
    [
        # No answer at all is the receiver's at once.
        (TRANSPORT, A, Circuit(), Blame.SINK),
        # One retryable answer, or several for one invocation, may be the row's own.
        (STATUS_500, A, Circuit(), Blame.ROW),
        (STATUS_500, A, Circuit(streak=A), Blame.ROW),
        # Retryable answers in a row across invocations are the receiver's.
        (STATUS_500, frozenset({"b"}), Circuit(streak=A), Blame.SINK),
        (STATUS_500, AB, Circuit(), Blame.SINK),  # one batch of two invocations
        # While the circuit is open, every retryable failure is the sink's.
        (STATUS_500, A, OPEN, Blame.SINK),
        (TRANSPORT, A, OPEN, Blame.SINK),
        # A Retry-After pauses the whole sink, open or closed.
        (SLOW_429, A, Circuit(), Blame.THROTTLE),
        (SLOW_429, A, Circuit(streak=frozenset({"b"})), Blame.THROTTLE),
        (SLOW_429, A, OPEN, Blame.THROTTLE),
        # "Retry-After: 0" (or a date in the past) is no pause: a plain retryable answer.
        (SinkError("HTTP 503", retryable=True, retry_after_s=0.0), A, Circuit(), Blame.ROW),
        # Permanent failures are the row's, and dead-letter it.
        (GONE_410, A, Circuit(), Blame.REJECTED),
        (GONE_410, A, OPEN, Blame.REJECTED),
        (GONE_410, frozenset({"b"}), Circuit(streak=A), Blame.REJECTED),
    ],
)
def test_blame(error: SinkError, keys: frozenset[str], circuit: Circuit, expected: Blame) -> None:
    assert blame(error, keys, circuit) is expected


TIMING = ProbeTiming(base_s=1.0, cap_s=30.0)


def fail(
    circuit: Circuit, error: SinkError, keys: frozenset[str] = A, *, probe: bool = False
) -> Circuit:
    blamed = blame(error, keys, circuit)
    return after_failure(
        circuit,
        blamed,
        keys,
        probe=probe,
        now_ms=NOW,
        error=error,
        timing=TIMING,
        rng=random.Random(3),
    )


NOW = 1_000_000


def test_a_sink_wide_failure_opens_and_the_first_probe_comes_within_the_base() -> None:
    opened = fail(Circuit(), TRANSPORT)
    assert opened.open
    assert opened.since_ms == NOW
    assert opened.last_error == "cannot reach"
    allowed = gate(opened, NOW)
    assert allowed.probe
    assert 0 <= allowed.wait_ms <= 1000


@pytest.mark.parametrize(
    ("probes_failed", "ceiling_ms"),
    [(0, 2000), (1, 4000), (2, 8000), (4, 30_000), (40, 30_000)],
)
def test_failed_probes_back_off_exponentially_with_full_jitter_up_to_the_cap(
    probes_failed: int, ceiling_ms: int
) -> None:
    circuit = replace(OPEN, probes_failed=probes_failed)
    waits = []
    for seed in range(200):
        after = after_failure(
            circuit,
            Blame.SINK,
            A,
            probe=True,
            now_ms=NOW,
            error=STATUS_500,
            timing=TIMING,
            rng=random.Random(seed),
        )
        assert after.probes_failed == probes_failed + 1
        waits.append(gate(after, NOW).wait_ms)
    assert max(waits) <= ceiling_ms
    assert min(waits) < ceiling_ms * 0.1  # full jitter: from zero, not from half the ceiling
    assert max(waits) > ceiling_ms * 0.9


def test_a_send_in_flight_when_the_circuit_opened_is_no_new_evidence() -> None:
    opened = fail(Circuit(), TRANSPORT)
    straggler = fail(opened, STATUS_500, frozenset({"b"}), probe=False)
    assert (straggler.probes_failed, straggler.probe_due_ms) == (0, opened.probe_due_ms)


def test_the_first_success_closes_and_forgets() -> None:
    opened = fail(fail(Circuit(), TRANSPORT), TRANSPORT, probe=True)
    closed = after_success(opened, NOW + 5000)
    assert not closed.open
    assert (closed.since_ms, closed.last_success_ms, closed.probes_failed) == (
        NOW + 5000,
        NOW + 5000,
        0,
    )
    assert gate(closed, NOW + 5000) == Gate(0, probe=False)


def test_row_failures_build_a_streak_that_a_success_or_an_answer_resets() -> None:
    one = fail(Circuit(), STATUS_500)
    assert (one.open, one.streak) == (False, A)
    assert fail(after_success(one, NOW), STATUS_500, frozenset({"b"})).open is False
    assert fail(fail(one, GONE_410, frozenset({"c"})), STATUS_500, frozenset({"b"})).open is False
    assert fail(one, STATUS_500, frozenset({"b"})).open is True


def test_a_retry_after_pauses_the_whole_sink_and_nothing_more() -> None:
    paused = fail(Circuit(), SLOW_429)
    assert not paused.open
    assert gate(paused, NOW) == Gate(30_000, probe=False)
    assert gate(paused, NOW + 30_000) == Gate(0, probe=False)
    assert paused.streak == frozenset()


def test_an_open_circuit_waits_for_the_later_of_its_probe_and_a_pause() -> None:
    opened = replace(OPEN, probe_due_ms=NOW + 2000)
    assert gate(fail(opened, SLOW_429, probe=True), NOW) == Gate(30_000, probe=True)


def test_a_rejected_probe_lets_the_next_head_be_probed_at_once() -> None:
    opened = replace(OPEN, probe_due_ms=NOW + 9000, probes_failed=3)
    after = fail(opened, GONE_410, probe=True)
    assert after.open
    assert gate(after, NOW) == Gate(0, probe=True)
    assert after.probes_failed == 3


def test_a_stored_open_circuit_probes_at_once_and_keeps_its_start() -> None:
    circuit = restored(SinkHealthRecord("hook", False, 5, 4, "HTTP 503"))
    assert (circuit.open, circuit.since_ms, circuit.last_success_ms) == (True, 5, 4)
    assert gate(circuit, NOW) == Gate(0, probe=True)
    assert not restored(SinkHealthRecord("hook", True, 5, 4, "")).open


POLICY = DeliveryPolicy(backoff_base_s=1.0, backoff_cap_s=600.0, max_age_s=3600.0)


def row(*, attempts: int = 0, row_failures: int = 0, age_s: int = 0) -> OutboxRow:
    return OutboxRow(1, "tr_1", "a", attempts, 0, NOW - age_s * 1000, row_failures=row_failures)


@pytest.mark.parametrize(
    ("outbox_row", "error", "blamed", "expected"),
    [
        # The sink's failure: due at once (the circuit holds it), not counted as the row's.
        (row(attempts=9), STATUS_500, Blame.SINK, Retry(0.0, own=False)),
        (row(), SLOW_429, Blame.THROTTLE, Retry(30.0, own=False)),
        # The row's own: backoff from its own failures, however many attempts the sink failed.
        (row(attempts=30), STATUS_500, Blame.ROW, (0.0, 1.0)),
        (row(attempts=30, row_failures=1), STATUS_500, Blame.ROW, (0.0, 2.0)),
        (row(row_failures=3), STATUS_500, Blame.ROW, (0.0, 8.0)),
        # Dead letters keep their meaning, whoever failed.
        (row(age_s=3601), TRANSPORT, Blame.SINK, Dead("too old")),
        (row(age_s=3599), TRANSPORT, Blame.SINK, Retry(0.0, own=False)),
        (row(), GONE_410, Blame.REJECTED, Dead("permanent error")),
    ],
)
def test_verdict_by_blame(
    outbox_row: OutboxRow,
    error: SinkError,
    blamed: Blame,
    expected: Retry | Dead | tuple[float, float],
) -> None:
    outcome = verdict(outbox_row, error, POLICY, NOW, random.Random(5), blamed)
    if isinstance(expected, tuple):
        assert isinstance(outcome, Retry)
        assert outcome.own
        assert expected[0] <= outcome.delay_s <= expected[1]
    else:
        assert outcome == expected


def rows_of(*spec: tuple[str, int]) -> list[OutboxRow]:
    return [
        OutboxRow(seq, f"tr_{seq}", key, 0, due_ms, 0)
        for seq, (key, due_ms) in enumerate(spec, start=1)
    ]


@pytest.mark.parametrize(
    ("rows", "batching", "expected"),
    [
        (rows_of(("a", 0), ("a", 0), ("b", 0)), Batching(max_in_flight=16), [[1]]),
        (rows_of(("a", 0), ("a", 0), ("b", 0)), Batching(max_batch=50), [[1]]),
        # The oldest *due* head: a's head waits for its own retry, so b's goes.
        (rows_of(("a", 99), ("a", 0), ("b", 0)), Batching(max_batch=50), [[3]]),
        (rows_of(("a", 99), ("b", 99)), Batching(), []),
        ([], Batching(), []),
    ],
)
def test_a_probe_is_one_row_the_oldest_due_head(
    rows: list[OutboxRow], batching: Batching, expected: list[list[int]]
) -> None:
    batches = plan(rows, 10, batching, probe=True)
    assert [[r.seq for r in batch] for batch in batches] == expected
