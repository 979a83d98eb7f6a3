"""What each page shows, read in one transaction: functions of a read-only connection that
run on the console's reader thread and return a template's context.

Deciding what a row means (a sink "backing off", a silence "active") happens here, not in
the templates, so the templates only lay out and escape.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from watcher.core.route import FAILURE_STATUSES
from watcher.daemon.console.chart import build_chart
from watcher.daemon.console.minutes import MinuteCounts
from watcher.daemon.console.params import ListQuery
from watcher.store.sqlite import console_reads as reads

DAY_MS = 86_400_000
FAILURES_SHOWN = 20
TIMELINE_ROWS = 500
SILENCES_ENDED_MS = 7 * DAY_MS
"""How long an ended silence stays listed."""
SILENCES_SHOWN = 500
OUTBOX_STATES = ("pending", "dead", "sent")


def _sink_state(sink: dict[str, Any]) -> str:
    """up, backing off (rows waiting to retry on a healthy sink) or circuit open."""
    if not sink["healthy"]:
        return "circuit open"
    return "backing off" if sink["retrying"] else "up"


def overview(
    db: sqlite3.Connection, *, now_ms: int, hours: int, minutes: MinuteCounts
) -> dict[str, Any]:
    """Counts by status, the last day's failures, the chart, and each sink's health."""
    counts = reads.status_counts(db)
    failures, failures_total = reads.recent_failures(db, now_ms - DAY_MS, FAILURES_SHOWN)
    chart_rows = minutes.read(db, now_ms - hours * 3_600_000, now_ms)
    sinks = [{**sink, "state": _sink_state(sink)} for sink in reads.sinks(db)]
    failing_statuses = sorted({row["status"] for row in failures})
    return {
        "counts": counts,
        "total": sum(count for _, count in counts),
        "failure_statuses": FAILURE_STATUSES,
        "failures": failures,
        "failures_total": failures_total,
        "failing_statuses": failing_statuses,
        "chart": build_chart(chart_rows, now_ms=now_ms, hours=hours),
        "sinks": sinks,
    }


def invocation_list(db: sqlite3.Connection, *, query: ListQuery) -> dict[str, Any]:
    """One page of the filtered invocation list, the choices for its form, and its pager."""
    rows, total = reads.invocations_page(db, query.where, query.page)
    statuses = [status for status, _ in reads.status_counts(db)]
    pages = -(-min(total, reads.COUNT_CAP) // reads.PAGE_ROWS)
    return {
        "rows": rows,
        "total": total,
        "capped": total > reads.COUNT_CAP,
        "count_cap": reads.COUNT_CAP,
        "pages": pages,
        "has_next": len(rows) == reads.PAGE_ROWS
        and (total > reads.COUNT_CAP or query.page * reads.PAGE_ROWS < total),
        "functions": reads.function_names(db),
        "statuses": statuses,
        "query": query,
    }


def _timeline_item(item: dict[str, Any], deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    data = item["data"]
    summary = data.get("invocation") if isinstance(data.get("invocation"), dict) else {}
    event = data.get("event") if isinstance(data.get("event"), dict) else None
    if event is not None:  # only what the page shows, each there even in a malformed row
        event = {name: event.get(name) or "" for name in ("eventId", "status", "eventDetail")}
    labels = data.get("labels") if isinstance(data.get("labels"), dict) else {}
    return {
        **item,
        "status": data.get("status"),
        "previous_status": data.get("previousStatus"),
        "event": event,
        "detail": data.get("detail") or "",
        "error": summary.get("errorMessage") or "",
        "retries": summary.get("alreadyRetriedTimes"),
        "payload": summary.get("payloadExcerpt") or "",
        "labels": labels,
        "deliveries": deliveries,
    }


def invocation(db: sqlite3.Connection, *, key: str) -> dict[str, Any] | None:
    """One invocation: its snapshot, its timeline and every delivery of each transition."""
    snapshot = reads.invocation(db, key)
    if snapshot is None:
        return None
    items, total = reads.timeline(db, key, TIMELINE_ROWS)
    by_transition = reads.deliveries(db, key)
    timeline = [_timeline_item(item, by_transition.get(item["id"], [])) for item in items]
    labels = timeline[-1]["labels"] if timeline else {}
    payload = next((item["payload"] for item in reversed(timeline) if item["payload"]), "")
    return {
        "inv": snapshot,
        "payload": payload,
        "timeline": timeline,
        "timeline_total": total,
        "labels": labels,
        "dead": sum(1 for rows in by_transition.values() for row in rows if row["state"] == "dead"),
    }


def outbox(db: sqlite3.Connection, *, sink: str | None, state: str, page: int) -> dict[str, Any]:
    """One sink's rows in one state, a page at a time; without a sink, the sinks to choose."""
    sinks = reads.sinks(db)
    rows, total = reads.outbox_page(db, sink, state, page) if sink else ([], 0)
    return {
        "sinks": sinks,
        "sink": sink,
        "state": state,
        "states": OUTBOX_STATES,
        "rows": rows,
        "total": total,
        "page": page,
        "pages": -(-total // reads.PAGE_ROWS),
    }


def _silence_phase(silence: dict[str, Any], now_ms: int) -> str:
    ended_ms = silence["expired_ms"] or silence["ends_ms"]
    if min(ended_ms, silence["ends_ms"]) <= now_ms:
        return "ended"
    return "active" if silence["starts_ms"] <= now_ms else "pending"


def silences(db: sqlite3.Connection, *, now_ms: int) -> dict[str, Any]:
    """Active and upcoming silences, and those that ended in the last week."""
    found = reads.silences(db, now_ms - SILENCES_ENDED_MS, SILENCES_SHOWN)
    by_phase: dict[str, list[dict[str, Any]]] = {"active": [], "pending": [], "ended": []}
    for silence in found:
        silence["ended_ms"] = min(silence["expired_ms"] or silence["ends_ms"], silence["ends_ms"])
        by_phase[_silence_phase(silence, now_ms)].append(silence)
    return {**by_phase, "ended_window_ms": SILENCES_ENDED_MS}
