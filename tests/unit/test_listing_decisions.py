"""The pure decisions of list-based watching (``watcher.core.listing``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from watcher.core.invocation import TERMINAL_STATUSES, Invocation
from watcher.core.listing import (
    ACTIVE_STATUSES,
    LIST_MARGIN,
    estimated_list_calls,
    is_scan_watched,
    list_is_cheaper,
    listed_changed,
    missing,
    next_watermark,
    scan_begin_ms,
    wants_first_sighting,
)
from watcher.core.model import Snapshot

STATUSES = sorted([*ACTIVE_STATUSES, *TERMINAL_STATUSES])


def _item(status: str = "Running", started_ms: int = 1_000, **extra: object) -> Invocation:
    return Invocation.model_validate(
        {"status": status, "invocationId": "x", "startedTime": started_ms, **extra}
    )


items = st.builds(
    _item,
    status=st.sampled_from(STATUSES),
    started_ms=st.integers(0, 10**13),
    alreadyRetriedTimes=st.integers(0, 5),
    endTime=st.integers(0, 10**13),
    invocationErrorMessage=st.text(max_size=5),
)


@given(items)
def test_an_item_is_unchanged_against_the_snapshot_made_of_it(item: Invocation) -> None:
    snapshot = Snapshot(
        status=item.status,
        already_retried_times=item.already_retried_times,
        end_ms=item.end_ms,
        error_message=item.error_message,
    )
    assert not listed_changed(snapshot, item)
    assert listed_changed(None, item)  # never seen: a Get
    assert listed_changed(Snapshot(status=item.status, failing=True), item)


@given(items, st.sampled_from(["status", "retries", "end", "error"]))
def test_any_listed_field_that_differs_is_a_change(item: Invocation, field: str) -> None:
    snapshot = Snapshot(
        status=item.status if field != "status" else item.status + "x",
        already_retried_times=item.already_retried_times + (field == "retries"),
        end_ms=item.end_ms + (field == "end"),
        error_message=item.error_message + ("!" if field == "error" else ""),
    )
    assert listed_changed(snapshot, item)


def test_only_known_active_invocations_are_watched_by_a_scan() -> None:
    assert is_scan_watched(Snapshot(status="Running"))
    assert not is_scan_watched(Snapshot(status="Failed"))  # terminal: its last Get settles it
    assert not is_scan_watched(Snapshot(status="Paused"))  # unknown: no List covers it
    assert not is_scan_watched(Snapshot())  # never found: Gets until it is
    assert not is_scan_watched(None)


@given(st.sampled_from(STATUSES), st.integers(0, 10**13), st.integers(0, 10**13))
def test_first_scan_takes_the_running_and_the_recent(status: str, started: int, since: int) -> None:
    item = _item(status, started)
    wanted = wants_first_sighting(item, statuses=None, first_scan=True, since_ms=since)
    assert wanted == (status not in TERMINAL_STATUSES or started >= since)
    assert wants_first_sighting(item, statuses=None, first_scan=False, since_ms=since)


@given(st.sampled_from(STATUSES), st.sets(st.sampled_from(STATUSES), min_size=1))
def test_statuses_filter_on_first_sighting(status: str, statuses: set[str]) -> None:
    item = _item(status)
    wanted = wants_first_sighting(item, statuses=statuses, first_scan=False, since_ms=0)
    assert wanted == (status in statuses)


@given(st.sets(st.text(max_size=3)), st.sets(st.text(max_size=3)), st.sets(st.text(max_size=3)))
def test_missing_is_watched_minus_listed_minus_polled(
    watched: set[str], listed: set[str], polled: set[str]
) -> None:
    assert set(missing(watched, listed, polled)) == watched - listed - polled


@given(st.none() | st.integers(0, 10**13), st.lists(st.integers(0, 10**13)))
def test_the_watermark_never_moves_back(current: int | None, started: list[int]) -> None:
    moved = next_watermark(current, started)
    if current is not None:
        assert moved is not None and moved >= current
    if started:
        assert moved is not None and moved >= max(started)
    else:
        assert moved == current


def test_scan_begins_one_overlap_behind_and_never_before_zero() -> None:
    assert scan_begin_ms(100_000, 60) == 40_000
    assert scan_begin_ms(1_000, 60) == 0


@given(st.integers(0, 100_000))
def test_listing_is_chosen_only_when_cheaper_than_a_get_each(watched: int) -> None:
    calls = estimated_list_calls(watched)
    assert calls >= len(ACTIVE_STATUSES)
    assert list_is_cheaper(watched, calls) == (watched >= LIST_MARGIN * calls)
    if watched >= 1_000:
        assert calls <= watched // 50  # list-based costs at most 0.02 calls each
