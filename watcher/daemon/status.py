"""``fc-watcher status``: what the state DB knows, as a table or as JSON. Read-only.

Invocations, the outbox, dead letters, and each sink's health as the daemon last recorded it
(its circuit is written when it opens or closes, so this shows an outage while it lasts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from watcher.store.records import DeadLetter, InvocationRow, SinkBacklog, SinkHealthRecord
from watcher.store.sqlite import SqliteStore


def _age(ms: int, now_ms: int) -> str:
    """A short human duration since ``ms``: 42s, 3m05s, 2h10m, 4d03h."""
    if not ms:
        return "-"
    seconds = max(0, (now_ms - ms) // 1000)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"


def _row_dict(row: InvocationRow) -> dict[str, Any]:
    snapshot = row.snapshot
    return {
        "api": row.api,
        "service": row.service,
        "function": row.function,
        "qualifier": row.qualifier,
        "invocationId": row.invocation_id,
        "status": snapshot.status or ("not found" if snapshot.not_found_count else None),
        "lastEvent": snapshot.last_event_status or None,
        "lastEventMs": snapshot.last_event_ms or None,
        "retries": snapshot.already_retried_times,
        "startedMs": snapshot.started_ms or None,
        "lastPolledMs": row.last_polled_ms or None,
        "changedMs": snapshot.changed_ms or None,
        "pollFailing": snapshot.failing,
        "error": snapshot.error_message or None,
    }


def _dead_dict(letter: DeadLetter) -> dict[str, Any]:
    return {
        "sink": letter.sink,
        "transitionId": letter.transition_id,
        "type": letter.type,
        "invocation": letter.invocation_key,
        "attempts": letter.attempts,
        "error": letter.last_error,
        "deadMs": letter.dead_ms,
    }


def _sink_dicts(health: list[SinkHealthRecord], backlog: list[SinkBacklog]) -> list[dict[str, Any]]:
    """One entry per sink known to the outbox or to sink health; a sink whose circuit never
    opened is healthy."""
    by_health = {record.sink: record for record in health}
    by_backlog = {row.sink: row for row in backlog}
    sinks = []
    for name in sorted(by_health.keys() | by_backlog.keys()):
        record, rows = by_health.get(name), by_backlog.get(name)
        healthy = record is None or record.healthy
        sinks.append(
            {
                "sink": name,
                "state": "healthy" if healthy else "unhealthy",
                "sinceMs": record.since_ms if record else None,
                "lastSuccessMs": (record.last_success_ms or None) if record else None,
                "lastError": (record.last_error or None) if record else None,
                "pending": rows.pending if rows else 0,
                "dead": rows.dead if rows else 0,
                "oldestPendingMs": (rows.oldest_created_ms or None) if rows else None,
            }
        )
    return sinks


async def _read(path: Path) -> dict[str, Any]:
    store = await SqliteStore.open(path, readonly=True)
    try:
        return {
            "invocations": [_row_dict(row) for row in await store.invocation_rows()],
            "outbox": await store.outbox_counts(),
            "deadLetters": [_dead_dict(letter) for letter in await store.dead_letters()],
            "sinks": _sink_dicts(await store.sink_health(), await store.outbox_by_sink()),
        }
    finally:
        await store.close()


def _columns(table: Sequence[Sequence[str]]) -> list[str]:
    """``table`` as lines of left-aligned columns."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]


def _sink_lines(sinks: list[dict[str, Any]], now: int) -> list[str]:
    """The SINK HEALTH block: state, since when, last success, backlog, last error."""
    table = [("SINK", "STATE", "SINCE", "LAST SUCCESS", "PENDING", "DEAD", "LAST ERROR")]
    for sink in sinks:
        unhealthy = sink["state"] == "unhealthy"
        last_success = sink["lastSuccessMs"] if unhealthy else None
        table.append(
            (
                sink["sink"],
                sink["state"],
                _age(sink["sinceMs"] or 0, now),
                _age(last_success or 0, now) + (" ago" if last_success else ""),
                str(sink["pending"]),
                str(sink["dead"]),
                (sink["lastError"] or "-")[:120] if unhealthy else "-",
            )
        )
    return ["SINK HEALTH", *_columns(table)]


async def render_status(path: Path, *, as_json: bool, now_ms: int | None = None) -> str:
    """The status report for the state DB at ``path``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    report = await _read(path)
    if as_json:
        return json.dumps(report, indent=2)
    rows, outbox, dead = report["invocations"], report["outbox"], report["deadLetters"]
    header = ("INVOCATION", "STATUS", "LAST EVENT", "RETRIES", "LAST POLLED", "AGE")
    table = [header]
    for row in rows:
        name = "/".join(p for p in (row["service"], row["function"], row["invocationId"]) if p)
        status = row["status"] or "-"
        if row["pollFailing"]:
            status += " (poll failing)"
        table.append(
            (
                name,
                status,
                row["lastEvent"] or "-",
                str(row["retries"]),
                _age(row["lastPolledMs"] or 0, now) + (" ago" if row["lastPolledMs"] else ""),
                _age(row["startedMs"] or 0, now),
            )
        )
    lines = _columns(table)
    lines.append("")
    lines.append(
        "outbox: "
        + ", ".join(f"{outbox.get(state, 0)} {state}" for state in ("pending", "sent", "dead"))
    )
    if dead:
        lines.append("dead letters (re-send with: fc-watcher redeliver -c FILE):")
        for letter in dead:
            lines.append(
                f"  {letter['sink']:<12} {letter['transitionId']}  {letter['type']:<26} "
                f"{letter['invocation']}  after {letter['attempts']} attempt(s): {letter['error']}"
            )
    if report["sinks"]:
        lines += ["", *_sink_lines(report["sinks"], now)]
    return "\n".join(lines)
