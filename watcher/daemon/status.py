"""``fc-watcher status``: what the state DB knows, as a table or as JSON. Read-only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from watcher.store.records import DeadLetter, InvocationRow
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


async def _read(
    path: Path,
) -> tuple[list[dict[str, Any]], dict[str, int], list[dict[str, Any]]]:
    store = await SqliteStore.open(path, readonly=True)
    try:
        rows = [_row_dict(row) for row in await store.invocation_rows()]
        outbox = await store.outbox_counts()
        dead = [_dead_dict(letter) for letter in await store.dead_letters()]
    finally:
        await store.close()
    return rows, outbox, dead


async def render_status(path: Path, *, as_json: bool, now_ms: int | None = None) -> str:
    """The status report for the state DB at ``path``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows, outbox, dead = await _read(path)
    if as_json:
        return json.dumps({"invocations": rows, "outbox": outbox, "deadLetters": dead}, indent=2)
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
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
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
    return "\n".join(lines)
