"""Decisions of list-based watching, as pure functions: no I/O, no clock.

A scan lists a function's invocations and compares each item with what is known of it. These
functions decide: whether an item differs from the stored snapshot on the fields a List item
carries (so it needs a Get for its events), whether discovery tracks an item it has not seen,
which tracked invocations went missing from the pages where they should be, how far the
watermark may advance, and whether listing is cheaper than a Get each.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from watcher.core.invocation import TERMINAL_STATUSES, Status
from watcher.core.model import Snapshot

ACTIVE_STATUSES: tuple[str, ...] = (
    Status.ENQUEUED,
    Status.DEQUEUED,
    Status.RUNNING,
    Status.RETRYING,
    Status.STOPPING,
)
"""The documented non-terminal statuses: one status-filtered List each finds the active ones."""

PAGE_LIMIT = 100
"""The largest page FC serves: fewest calls per scan."""


class ListedFields(Protocol):
    """What a scan reads of a List item: ``Invocation`` has it, and so does ``Listed``."""

    @property
    def invocation_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def started_ms(self) -> int: ...
    @property
    def already_retried_times(self) -> int: ...
    @property
    def end_ms(self) -> int: ...
    @property
    def error_message(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Listed:
    """What a scan keeps of one List item. A page's parsed models are dropped as soon as the
    page is read: a scan of 100,000 invocations must not hold 100,000 of them at once."""

    invocation_id: str
    status: str
    started_ms: int
    already_retried_times: int
    end_ms: int
    error_message: str

    @classmethod
    def of(cls, item: ListedFields) -> Listed:
        return cls(
            item.invocation_id,
            item.status,
            item.started_ms,
            item.already_retried_times,
            item.end_ms,
            item.error_message,
        )


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a List item says of an invocation, in the fields both it and a snapshot hold."""

    status: str
    already_retried_times: int
    end_ms: int
    error_message: str

    @classmethod
    def of_item(cls, item: ListedFields) -> Fingerprint:
        return cls(item.status, item.already_retried_times, item.end_ms, item.error_message)

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot) -> Fingerprint | None:
        if snapshot.status is None:
            return None
        return cls(
            snapshot.status, snapshot.already_retried_times, snapshot.end_ms, snapshot.error_message
        )


def listed_changed(snapshot: Snapshot | None, item: ListedFields) -> bool:
    """True when ``item`` says something the snapshot does not know: it needs a Get.

    A snapshot that is failing (polls erroring) or waiting for its final event also counts as
    changed, so the Get that settles it is not skipped.
    """
    if snapshot is None or snapshot.failing:
        return True
    return Fingerprint.of_snapshot(snapshot) != Fingerprint.of_item(item)


def is_scan_watched(snapshot: Snapshot | None) -> bool:
    """Whether a scan can watch this invocation without Gets: it is known, and in one of the
    statuses the status-filtered Lists cover. Unknown statuses, terminal ones waiting for a last
    event and never-found ones are polled by Get."""
    return snapshot is not None and not snapshot.failing and snapshot.status in ACTIVE_STATUSES


def wants_first_sighting(
    item: ListedFields, *, statuses: Collection[str] | None, first_scan: bool, since_ms: int
) -> bool:
    """Whether discovery tracks an invocation it sees for the first time.

    On an entry's first scan, only what is still running, or what started at or after
    ``since_ms`` (now minus ``since_s``), is tracked: yesterday's failures are history, not
    news. Later, everything new is. ``statuses`` keeps only those first seen in one of them.
    """
    if statuses is not None and item.status not in statuses:
        return False
    if first_scan:
        return item.status not in TERMINAL_STATUSES or item.started_ms >= since_ms
    return True


def missing(
    watched_keys: Iterable[str], listed_keys: Collection[str], polled_keys: Collection[str]
) -> list[str]:
    """Watched invocations that no active page showed: each gets a Get of its own (it may have
    changed twice between scans, finished, or gone)."""
    return [key for key in watched_keys if key not in listed_keys and key not in polled_keys]


def next_watermark(current_ms: int | None, listed_started_ms: Iterable[int]) -> int | None:
    """The latest start time a scan has covered: the watermark never moves back."""
    latest = max(listed_started_ms, default=None)
    if latest is None:
        return current_ms
    return latest if current_ms is None else max(current_ms, latest)


def scan_begin_ms(watermark_ms: int, overlap_s: float) -> int:
    """Where the next scan for new invocations starts: behind the watermark by the overlap,
    because FC's clock is not ours (ids seen again are deduplicated)."""
    return max(0, watermark_ms - int(overlap_s * 1000))


LIST_MARGIN = 2
"""Listing must save at least half the calls: a List page is heavier than a Get (up to 100
items to serve and read), and a function near the line should not flip between modes."""


def list_is_cheaper(active_watched: int, list_calls_per_scan: int) -> bool:
    """Whether a scan (its List calls) costs clearly less than a Get for each watched
    invocation (``LIST_MARGIN`` times fewer calls)."""
    return active_watched >= LIST_MARGIN * list_calls_per_scan


def estimated_list_calls(active_watched: int) -> int:
    """List calls a scan of ``active_watched`` invocations needs at least: one per active
    status, plus a page for each further hundred."""
    return len(ACTIVE_STATUSES) + max(0, -(-active_watched // PAGE_LIMIT) - 1)


def stretch_ratio(demand_per_s: float, budget_per_s: float | None) -> float:
    """How much every interval stretches when the calls asked for exceed the budget (1.0:
    not at all). The limiter serves calls in due order, so the stretch is shared evenly."""
    if not budget_per_s or demand_per_s <= budget_per_s:
        return 1.0
    return demand_per_s / budget_per_s
