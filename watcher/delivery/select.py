"""The select stage: which of a sink's pending rows go out on this pass, and in what batches.

Pure: functions of the rows, the time and the sink's ``Batching``, with no I/O and no clock,
so every ordering rule can be tested from a table. Rows arrive in commit order. The rule that
keeps delivery in order per invocation lives here and nowhere else: a row never goes out while
an earlier row of its invocation is still pending. ``bounded`` keeps a row's times, read from
the store, within what this process could have written, so that no clock step stored in a row
holds it for an hour. Nothing here waits, sends, or decides what a failure means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from watcher.delivery.sinks.base import Batching
from watcher.store.records import OutboxRow

Bounds = dict[tuple[int, int], int]
"""By (seq, attempts): the latest a row read with a far-off due time may be due."""


def bounded(
    rows: Sequence[OutboxRow], now_ms: int, cap_ms: int, bounds: Mapping[tuple[int, int], int]
) -> tuple[list[OutboxRow], Bounds]:
    """The rows as this process may schedule them, and the bounds to keep for the next pass.

    Times are steady milliseconds, and no wait this process writes into a row is longer than
    the sink's backoff cap ``cap_ms`` (a longer Retry-After pauses the sink in its circuit, not
    in the row). A row due further ahead was stamped on another clock (a previous run's, or
    ``redeliver``'s), which a wall-clock step has since moved away from ours: it waits at most
    ``cap_ms`` from when this process first read it. A row never tried was due when it was
    created, and a creation time ahead of now reads as now, so neither the grouping wait nor
    the age can stretch by a step. A bound is kept by the row's attempts: once a send of it
    fails, the due time written then is ours, and holds. Pure.
    """
    kept: Bounds = {}
    out: list[OutboxRow] = []
    for row in rows:
        key = (row.seq, row.attempts)
        created_ms = min(row.created_ms, now_ms)
        due_ms = row.next_attempt_ms
        if row.attempts == 0:
            due_ms = min(due_ms, created_ms)
        elif key in bounds or due_ms > now_ms + cap_ms:
            kept[key] = bounds.get(key, now_ms + cap_ms)
            due_ms = min(due_ms, kept[key])
        if (due_ms, created_ms) != (row.next_attempt_ms, row.created_ms):
            row = dataclasses.replace(row, next_attempt_ms=due_ms, created_ms=created_ms)
        out.append(row)
    return out, kept


def select_due(rows: Sequence[OutboxRow], now_ms: int, max_batch: int) -> list[OutboxRow]:
    """The rows to send now: due, and not behind an undue row of the same invocation."""
    blocked: set[str] = set()
    chosen: list[OutboxRow] = []
    for row in rows:
        if row.invocation_key in blocked:
            continue
        if row.next_attempt_ms > now_ms:
            blocked.add(row.invocation_key)
            continue
        chosen.append(row)
        if len(chosen) >= max_batch:
            break
    return chosen


def select_heads(rows: Sequence[OutboxRow], now_ms: int, limit: int) -> list[OutboxRow]:
    """The first pending row of each invocation, if due, in commit order."""
    seen: set[str] = set()
    heads: list[OutboxRow] = []
    for row in rows:
        if row.invocation_key in seen:
            continue
        seen.add(row.invocation_key)
        if row.next_attempt_ms <= now_ms:
            heads.append(row)
            if len(heads) >= limit:
                break
    return heads


def plan(
    rows: Sequence[OutboxRow], now_ms: int, batching: Batching, *, probe: bool = False
) -> list[list[OutboxRow]]:
    """The batches to send now, one ``send`` each, run side by side; empty if none is due.

    A sink that takes several sends at once gets one row per send, and only invocations' head
    rows: with one row of each invocation in flight, concurrency cannot reorder an invocation.
    A ``probe`` of an unhealthy sink is one row alone: the oldest due head, which no earlier
    row of its invocation can be waiting behind.
    """
    if probe:
        return [[row] for row in select_heads(rows, now_ms, 1)]
    if batching.max_in_flight > 1:
        return [[row] for row in select_heads(rows, now_ms, batching.max_in_flight)]
    chosen = select_due(rows, now_ms, batching.max_batch)
    return [chosen] if chosen else []


def next_due_ms(rows: Sequence[OutboxRow], now_ms: int) -> int | None:
    """Milliseconds until the sink has a row it may send (0 if it has one now); ``None`` if
    nothing is pending.

    Only the first pending row of each invocation counts: a later row waits for it, so its
    own (earlier) due time would wake the loop for nothing, over and over, until the first
    row's retry.
    """
    seen: set[str] = set()
    earliest: int | None = None
    for row in rows:
        if row.invocation_key in seen:
            continue
        seen.add(row.invocation_key)
        wait_ms = row.next_attempt_ms - now_ms
        earliest = wait_ms if earliest is None else min(earliest, wait_ms)
    return None if earliest is None else max(0, earliest)
