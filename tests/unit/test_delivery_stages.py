"""The delivery stages on their own: pure selection, the hold decision, the retry verdict, and
the sink base class with each kind's batching as config gives it."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from watcher.config.delivery import SinkSettings
from watcher.delivery.hold import RateWindow, hold_ms
from watcher.delivery.record import Dead, DeliveryPolicy, FailureLog, Retry, verdict
from watcher.delivery.select import next_due_ms, plan, select_due, select_heads
from watcher.delivery.sinks import Batching, Sink, SinkError
from watcher.delivery.sinks.registry import build_sink
from watcher.store.records import OutboxRow

ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)


def rows_of(*spec: tuple[str, int]) -> list[OutboxRow]:
    """Rows in commit order from (invocation, due ms); seq counts from 1."""
    return [
        OutboxRow(seq, f"tr_{seq}", key, 0, due_ms, 0)
        for seq, (key, due_ms) in enumerate(spec, start=1)
    ]


def seqs(rows: Sequence[OutboxRow]) -> list[int]:
    return [row.seq for row in rows]


MIXED = rows_of(("a", 0), ("a", 0), ("b", 50), ("b", 0), ("c", 0), ("a", 0))


@pytest.mark.parametrize(
    ("rows", "now_ms", "max_batch", "expected"),
    [
        ([], 10, 10, []),
        (MIXED, 10, 10, [1, 2, 5, 6]),  # b's head is not due: b's later row waits behind it
        (MIXED, 10, 2, [1, 2]),
        (MIXED, 100, 10, [1, 2, 3, 4, 5, 6]),
        (MIXED, 100, 1, [1]),
        (rows_of(("a", 20), ("a", 0), ("b", 0)), 10, 10, [3]),
        (rows_of(("a", 10)), 10, 5, [1]),  # due exactly now counts as due
    ],
)
def test_select_due(
    rows: list[OutboxRow], now_ms: int, max_batch: int, expected: list[int]
) -> None:
    assert seqs(select_due(rows, now_ms, max_batch)) == expected


@pytest.mark.parametrize(
    ("rows", "now_ms", "limit", "expected"),
    [
        ([], 10, 4, []),
        (MIXED, 10, 10, [1, 5]),  # one row per invocation; b's head is not due
        (MIXED, 10, 1, [1]),
        (MIXED, 100, 10, [1, 3, 5]),
        (rows_of(("a", 20), ("a", 0)), 10, 4, []),  # never a later row in place of its head
    ],
)
def test_select_heads(rows: list[OutboxRow], now_ms: int, limit: int, expected: list[int]) -> None:
    assert seqs(select_heads(rows, now_ms, limit)) == expected


@pytest.mark.parametrize(
    ("batching", "now_ms", "expected"),
    [
        (Batching(max_batch=10), 10, [[1, 2, 5, 6]]),
        (Batching(max_batch=3), 100, [[1, 2, 3]]),
        (Batching(max_batch=10, max_in_flight=16), 100, [[1], [3], [5]]),
        (Batching(max_batch=10, max_in_flight=2), 100, [[1], [3]]),
        (Batching(max_batch=10), -1, []),
        (Batching(max_in_flight=4), -1, []),
    ],
)
def test_plan(batching: Batching, now_ms: int, expected: list[list[int]]) -> None:
    assert [seqs(batch) for batch in plan(MIXED, now_ms, batching)] == expected


@pytest.mark.parametrize(
    ("rows", "now_ms", "expected"),
    [
        ([], 0, None),
        (rows_of(("a", 500), ("b", 300)), 100, 200),
        (rows_of(("a", 50)), 100, 0),
        # a later row of "a" is due, but waits behind the first one's retry at 900
        (rows_of(("a", 900), ("a", 0), ("b", 1500)), 100, 800),
    ],
)
def test_next_due_ms(rows: list[OutboxRow], now_ms: int, expected: int | None) -> None:
    assert next_due_ms(rows, now_ms) == expected


@st.composite
def pending_rows(draw: st.DrawFn) -> list[OutboxRow]:
    specs = draw(
        st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 100), st.integers(0, 3)))
    )
    return [
        OutboxRow(seq, f"tr_{seq}", key, attempts, due_ms, 0)
        for seq, (key, due_ms, attempts) in enumerate(specs, start=1)
    ]


def sendable(rows: Sequence[OutboxRow], now_ms: int) -> list[OutboxRow]:
    """Rows due now whose earlier rows of the same invocation are all due too."""
    blocked: set[str] = set()
    out = []
    for row in rows:
        if row.next_attempt_ms > now_ms:
            blocked.add(row.invocation_key)
        elif row.invocation_key not in blocked:
            out.append(row)
    return out


@settings(max_examples=400, deadline=None)
@given(pending_rows(), st.integers(0, 100), st.integers(1, 8))
def test_selection_never_overtakes_within_an_invocation(
    rows: list[OutboxRow], now_ms: int, limit: int
) -> None:
    """A chosen row is never behind an undue or unchosen earlier row of its invocation."""
    chosen = select_due(rows, now_ms, limit)
    chosen_seqs = set(seqs(chosen))
    for row in chosen:
        for earlier in rows[: rows.index(row)]:
            if earlier.invocation_key == row.invocation_key:
                assert earlier.next_attempt_ms <= now_ms
                assert earlier.seq in chosen_seqs
    assert seqs(chosen) == sorted(chosen_seqs)
    assert len(chosen) <= limit
    # Nothing sendable is left out unless the batch is full.
    assert chosen == sendable(rows, now_ms)[:limit]


@settings(max_examples=400, deadline=None)
@given(pending_rows(), st.integers(0, 100), st.integers(1, 8))
def test_heads_are_one_due_first_row_per_invocation(
    rows: list[OutboxRow], now_ms: int, limit: int
) -> None:
    heads = select_heads(rows, now_ms, limit)
    keys = [row.invocation_key for row in heads]
    assert len(keys) == len(set(keys))
    first: dict[str, OutboxRow] = {}
    for row in rows:
        first.setdefault(row.invocation_key, row)
    due_firsts = [row for row in first.values() if row.next_attempt_ms <= now_ms]
    assert heads == due_firsts[:limit]
    batches = plan(rows, now_ms, Batching(max_in_flight=limit + 1))
    assert all(len(batch) == 1 for batch in batches)


NOW = 1_000_000


def row_at(*, created_ms: int = NOW, attempts: int = 0) -> OutboxRow:
    return OutboxRow(1, "tr_1", "a", attempts, created_ms, created_ms)


@pytest.mark.parametrize(
    ("oldest", "rate_wait_s", "group_wait_s", "flush", "expected"),
    [
        (row_at(), 0.0, 0.0, False, 0),
        (row_at(), 2.5, 0.0, False, 2500),
        (row_at(created_ms=NOW - 4000), 0.0, 10.0, False, 6000),
        (row_at(created_ms=NOW - 12_000), 0.0, 10.0, False, 0),  # the wait is over
        (row_at(created_ms=NOW - 4000, attempts=1), 0.0, 10.0, False, 0),  # retries go at once
        (row_at(created_ms=NOW - 4000), 0.0, 10.0, True, 0),  # flush skips grouping
        (row_at(created_ms=NOW - 4000), 30.0, 10.0, True, 30_000),  # never the rate window
        (row_at(created_ms=NOW - 4000), 3.0, 10.0, False, 6000),  # the longer of the two
        (row_at(created_ms=NOW - 9000), 3.0, 10.0, False, 3000),
    ],
)
def test_hold_ms(
    oldest: OutboxRow, rate_wait_s: float, group_wait_s: float, flush: bool, expected: int
) -> None:
    held = hold_ms(oldest, NOW, rate_wait_s=rate_wait_s, group_wait_s=group_wait_s, flush=flush)
    assert held == expected


def test_rate_window_admits_per_minute_then_waits_for_the_oldest() -> None:
    now = [0.0]
    window = RateWindow(2, clock=lambda: now[0])
    for at in (0.0, 10.0):
        now[0] = at
        assert window.wait_s() == 0.0
        window.record()
    now[0] = 15.0
    assert window.wait_s() == pytest.approx(45.0)
    now[0] = 60.0
    assert window.wait_s() == 0.0


POLICY = DeliveryPolicy(backoff_base_s=2.0, backoff_cap_s=600.0, max_age_s=3600.0)


@pytest.mark.parametrize(
    ("error", "age_s", "attempts", "expected"),
    [
        (SinkError("gone", retryable=False), 0, 0, Dead("permanent error")),
        (SinkError("gone", retryable=False), 7200, 0, Dead("permanent error")),
        (SinkError("down", retryable=True), 3601, 0, Dead("too old")),
        (SinkError("down", retryable=True), 3600, 0, (0.0, 2.0)),
        (SinkError("down", retryable=True), 0, 3, (0.0, 16.0)),
        (SinkError("down", retryable=True), 0, 20, (0.0, 600.0)),
        (SinkError("slow", retryable=True, retry_after_s=120), 0, 0, (120.0, 120.0)),
    ],
)
def test_verdict(
    error: SinkError, age_s: int, attempts: int, expected: Dead | tuple[float, float]
) -> None:
    # Every attempt here was the row's own failure: its backoff grows by those alone (see
    # test_sink_health.py for failures that were the sink's).
    row = OutboxRow(1, "tr_1", "a", attempts, 0, NOW - age_s * 1000, row_failures=attempts)
    rng = random.Random(7)
    before = rng.getstate()
    outcome = verdict(row, error, POLICY, NOW, rng)
    if isinstance(expected, Dead):
        assert outcome == expected
        assert rng.getstate() == before  # a dead row leaves the jitter of its batch alone
    else:
        assert isinstance(outcome, Retry)
        assert expected[0] <= outcome.delay_s <= expected[1]


def told(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int, bool]]:
    return [
        (e["sink"], e["rows"], e["attempts"], e["first"])
        for e in entries
        if e["event"] == "delivery_retrying" and e["log_level"] == "warning"
    ]


def test_failure_log_tells_the_first_at_once_then_once_an_interval() -> None:
    """Failures of one sink, every second for 25 s: the first at once, then one line per 10 s
    with the rows and attempts since the last; another sink has its own lines; a pass after
    the interval tells what was held; the stop tells the rest."""
    log = FailureLog(interval_s=10)
    with capture_logs() as entries:
        for second in range(25):
            log.failed("hook", [second % 3], second * 1000, reason="down")
        log.failed("ding", [7, 8], 3_000, reason="429")
        log.tick("hook", 29_000)  # 9 s after the line at 20 s: nothing yet
        log.tick("hook", 30_000)
        log.failed("hook", [1], 31_000, reason="down")
        log.tick("ding", 4_000)
        log.flush()
    assert told(entries) == [
        ("hook", 1, 1, True),
        ("hook", 3, 10, False),  # the failures at 1..10 s, of 3 rows
        ("hook", 3, 10, False),  # 11..20 s
        ("ding", 2, 2, True),
        ("hook", 3, 4, False),  # 21..24 s, told by the pass at 30 s
        ("hook", 1, 1, False),  # 31 s, told at the stop
    ]
    assert {e["reason"] for e in entries if e.get("sink") == "hook"} == {"down"}


def test_failure_log_begins_an_episode_after_a_quiet_interval() -> None:
    """A failure an interval after the sink's last one is the first of a new episode: told at
    once, even right after a pass told the held ones; dead-lettered rows are not retries."""
    log = FailureLog(interval_s=10)
    with capture_logs() as entries:
        log.failed("hook", [1], 0)
        log.failed("hook", [2], 1_000)
        log.tick("hook", 12_000)
        log.failed("hook", [3], 13_000)
        log.failed("hook", [], 14_000)
    assert told(entries) == [
        ("hook", 1, 1, True),
        ("hook", 1, 1, False),
        ("hook", 1, 1, True),
    ]


def test_batching_rejects_impossible_values() -> None:
    for bad in ({"max_batch": 0}, {"max_in_flight": 0}, {"group_wait_s": -1.0}):
        with pytest.raises(ValueError, match="impossible batching"):
            Batching(**bad)


KINDS: list[tuple[dict[str, Any], Batching]] = [
    ({"type": "log"}, Batching(max_batch=500)),
    ({"type": "file", "path": "/tmp/t.jsonl"}, Batching(max_batch=500)),
    ({"type": "webhook", "url": "http://127.0.0.1:9/h"}, Batching(max_in_flight=16)),
    ({"type": "alertmanager", "url": "http://127.0.0.1:9"}, Batching(max_batch=100)),
    *(
        ({"type": kind, "url": "http://127.0.0.1:9/r"}, Batching(50, 1, 10.0))
        for kind in ("dingtalk", "feishu", "wecom", "slack")
    ),
    ({"type": "webhook", "url": "http://h:9/", "max_in_flight": 1}, Batching()),
    ({"type": "file", "path": "/tmp/t.jsonl", "max_batch": 7}, Batching(max_batch=7)),
    ({"type": "alertmanager", "url": "http://h:9", "max_batch": 3}, Batching(max_batch=3)),
    ({"type": "log", "max_batch": 2}, Batching(max_batch=2)),
    ({"type": "slack", "url": "http://h:9/", "group_wait_s": 0, "max_group": 5}, Batching(5)),
]


@pytest.mark.parametrize(("config", "expected"), KINDS)
async def test_every_kind_is_a_sink_with_batching_from_its_config(
    config: dict[str, Any], expected: Batching, http_session: aiohttp.ClientSession
) -> None:
    """Defaults are today's values; the config overrides them; the lifecycle hooks exist on
    every kind, so the service can call them without asking the type."""
    sink = build_sink(ADAPTER.validate_python({"name": "s", **config}), http_session, None)
    assert isinstance(sink, Sink)
    assert sink.batching == expected
    assert sink.wait_s() == 0.0
    sink.reopen()
    await sink.close()
    assert "name='s'" in repr(sink)
    assert "127.0.0.1" not in repr(sink)  # a robot's URL carries its token
