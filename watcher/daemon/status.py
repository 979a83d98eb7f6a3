"""``fc-watcher status``: what the state DB knows, as a table or as JSON. Read-only.

Invocations, the outbox, dead letters, and each sink's health as the daemon last recorded it
(its circuit is written when it opens or closes, so this shows an outage while it lasts), the
silences in force or to come, and "(silenced)" on a row whose latest transition one held back.

State DBs hold 100,000s of invocations, so rows are streamed a page at a time, never all held:
the table shows the problems first and at most ``limit`` rows; ``limit=None`` streams every
row; JSON is one document written row by row. An invocation the config no longer lists (a
reload removed it) or that FC forgot after it was seen (reported not found) is shown as such:
its last status would otherwise read "Running" forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

from watcher.config.load import ConfigError, load_config
from watcher.core.invocation import TERMINAL_STATUSES
from watcher.core.text import short_duration
from watcher.daemon.demand import budget_line
from watcher.daemon.silences import silence_json, silence_table
from watcher.daemon.tracked_keys import TrackedKeys, discovered_prefixes, with_live
from watcher.store.records import InvocationRow
from watcher.store.sqlite import status_reads
from watcher.store.sqlite.silences import list_silences

DEFAULT_LIMIT = 50
_HEADER = ("INVOCATION", "STATUS", "LAST EVENT", "RETRIES", "LAST POLLED", "AGE")


@dataclass(frozen=True, slots=True)
class StatusSource:
    """Where ``status`` reads, from the config."""

    state_path: Path
    tracked: TrackedKeys | None
    """Keys of the invocations the config lists or discovers; None when the config could not
    be read whole (then nothing is called "not tracked")."""
    problems: int = 0
    """How many problems the config has (it was read only for its state path)."""


def load_status_source(config_path: Path) -> StatusSource:
    """The state path and the tracked keys; a config with problems still gives its state path
    if that part is readable (status needs nothing else), else its ``ConfigError`` stands."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        state_path = _state_path_only(config_path)
        if state_path is None:
            raise
        return StatusSource(state_path, None, len(exc.problems))
    keys = frozenset(item.ref.key for item in loaded.tracked)
    tracked = TrackedKeys(keys, discovered_prefixes(loaded.config))
    return StatusSource(loaded.config.state.sqlite_path(), tracked)


def _state_path_only(config_path: Path) -> Path | None:
    """``state.path`` as ``load_config`` would read it (variables substituted), or None."""
    import yaml
    from pydantic import ValidationError

    from watcher.config.models import StateSettings
    from watcher.config.yaml_source import substitute

    try:
        document = yaml.safe_load(config_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    state = document.get("state") if isinstance(document, dict) else None
    problems: list[str] = []
    state = substitute(state, "state", dict(os.environ), problems)
    try:
        return None if problems else StateSettings.model_validate(state).path
    except ValidationError:
        return None


@dataclass(frozen=True, slots=True)
class StatusView:
    """What to show: JSON (every row) or a table of at most ``limit`` rows (None: all)."""

    as_json: bool = False
    limit: int | None = DEFAULT_LIMIT
    tracked: Collection[str] | None = None
    now_ms: int | None = None
    silenced: bool = False
    """Show which rows a silence held back (asked only when the state has silences)."""


def _age(ms: int, now_ms: int) -> str:
    """A short human duration since ``ms`` ("-" for never)."""
    return short_duration(now_ms - ms) if ms else "-"


def _tracked(row: InvocationRow, tracked: Collection[str] | None) -> bool | None:
    return None if tracked is None else row.key in tracked


def _status_text(row: InvocationRow, tracked: Collection[str] | None) -> str:
    """The STATUS cell: FC's last status, unless FC forgot it or the watcher let it go."""
    snapshot = row.snapshot
    if snapshot.not_found_reported:
        return "gone (not found)" if snapshot.status else "not found"
    status = snapshot.status or ("not found" if snapshot.not_found_count else "-")
    if _tracked(row, tracked) is False and status not in TERMINAL_STATUSES:
        # Not polled any more: what it last said (even "poll failing") is stale.
        return "not tracked" if status == "-" else f"{status} (not tracked)"
    return (
        status
        + (" (stuck)" if snapshot.stuck_reported else "")
        + (" (poll failing)" if snapshot.failing else "")
        + (" (silenced)" if row.silenced_by else "")
    )


def _row_dict(row: InvocationRow, tracked: Collection[str] | None) -> dict[str, Any]:
    snapshot = row.snapshot
    return {
        "api": row.api,
        "service": row.service,
        "function": row.function,
        "qualifier": row.qualifier,
        "invocationId": row.invocation_id,
        "status": snapshot.status or ("not found" if snapshot.not_found_count else None),
        "tracked": _tracked(row, tracked),
        "gone": bool(snapshot.not_found_reported and snapshot.status),
        "stuck": snapshot.stuck_reported > 0,
        "lastEvent": snapshot.last_event_status or None,
        "lastEventMs": snapshot.last_event_ms or None,
        "retries": snapshot.already_retried_times,
        "startedMs": snapshot.started_ms or None,
        "lastPolledMs": row.last_polled_ms or None,
        "changedMs": snapshot.changed_ms or None,
        "pollFailing": snapshot.failing,
        "error": snapshot.error_message or None,
        "silencedBy": row.silenced_by or None,
    }


def _cells(row: InvocationRow, view: StatusView, now: int) -> tuple[str, ...]:
    polled = row.last_polled_ms
    return (
        "/".join(p for p in (row.service, row.function, row.invocation_id) if p),
        _status_text(row, view.tracked),
        row.snapshot.last_event_status or "-",
        str(row.snapshot.already_retried_times),
        _age(polled, now) + (" ago" if polled else ""),
        _age(row.snapshot.started_ms, now),
    )


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _columns(table: Sequence[Sequence[str]]) -> list[str]:
    """``table`` as lines of left-aligned columns."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [_line(line, widths) for line in table]


def _problems_first(db: sqlite3.Connection, view: StatusView) -> Iterable[InvocationRow]:
    limit, silenced = view.limit, view.silenced
    rows = chain(
        status_reads.invocations(db, problems=True, limit=limit, silenced=silenced),
        status_reads.invocations(db, problems=False, limit=limit, silenced=silenced),
    )
    return rows if limit is None else islice(rows, limit)


def _write_table(db: sqlite3.Connection, out: TextIO, view: StatusView, now: int) -> None:
    totals = status_reads.totals(db)
    if view.limit is None:
        # Streamed: widths from one aggregate read, as the rows are never all in hand; room for
        # " (not tracked)", which only the config knows, and " (silenced)"; ages fit their headers.
        status_width = totals.status_width + 14 * (view.tracked is not None) + 11 * view.silenced
        widths = (
            max(len(_HEADER[0]), totals.name_width),
            max(len("gone (not found)"), status_width),
            max(len(_HEADER[2]), totals.last_event_width),
            *(len(header) for header in _HEADER[3:]),
        )
        out.write(_line(_HEADER, widths) + "\n")
        for row in _problems_first(db, view):
            out.write(_line(_cells(row, view, now), widths) + "\n")
    else:
        rows = [_cells(row, view, now) for row in _problems_first(db, view)]
        out.write("\n".join(_columns([_HEADER, *rows])) + "\n")
        if totals.invocations > len(rows):
            out.write(f"… {totals.invocations - len(rows)} more (use --all or --limit)\n")
    out.write(f"\ninvocations: {totals.invocations}, {totals.problems} with problems\n")


def _write_json(db: sqlite3.Connection, out: TextIO, view: StatusView, now: int) -> None:
    """One JSON document, the invocations last and one per line, written as they are read."""
    out.write("{\n")
    silences = [silence_json(silence, now) for silence in list_silences(db, now)]
    for name, value in [*status_reads.delivery(db).items(), ("silences", silences)]:
        out.write(f"  {json.dumps(name)}: {json.dumps(value)},\n")
    out.write('  "invocations": [')
    separator = "\n    "
    for row in status_reads.invocations(db, silenced=view.silenced):
        out.write(separator + json.dumps(_row_dict(row, view.tracked)))
        separator = ",\n    "
    out.write("\n  ]\n}\n")


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


def _delivery_lines(delivery: dict[str, Any], now: int) -> list[str]:
    outbox, dead = delivery["outbox"], delivery["deadLetters"]
    lines = ["outbox: " + ", ".join(f"{outbox.get(s, 0)} {s}" for s in ("pending", "sent", "dead"))]
    if dead:
        lines.append("dead letters (re-send with: fc-watcher redeliver -c FILE):")
        for letter in dead:
            lines.append(
                f"  {letter['sink']:<12} {letter['transitionId']}  {letter['type']:<26} "
                f"{letter['invocation']}  after {letter['attempts']} attempt(s): {letter['error']}"
            )
    if delivery["sinks"]:
        lines += ["", *_sink_lines(delivery["sinks"], now)]
    return lines


def write_status(path: Path, out: TextIO, view: StatusView) -> None:
    """Write the status report for the state DB at ``path`` to ``out``. Blocking: it reads
    and writes a page at a time (run it in a thread from a coroutine)."""
    now = int(time.time() * 1000) if view.now_ms is None else view.now_ms
    with status_reads.open_readonly(path) as db:
        view = dataclasses.replace(view, silenced=status_reads.has_silences(db))
        if view.tracked is not None:  # the ids registered live are tracked too
            live = status_reads.live_keys(db)
            view = dataclasses.replace(view, tracked=with_live(view.tracked, live))
        if view.as_json:
            _write_json(db, out, view, now)
            return
        _write_table(db, out, view, now)
        out.write("\n".join(_delivery_lines(status_reads.delivery(db), now)) + "\n")
        if silences := list_silences(db, now):  # in force or to come
            out.write("\nSILENCES\n" + "\n".join(silence_table(silences, now)) + "\n")
        if api := budget_line(status_reads.daemon_info(db)):
            out.write(f"\n{api}\n")


async def render_status(
    path: Path,
    *,
    as_json: bool,
    now_ms: int | None = None,
    limit: int | None = DEFAULT_LIMIT,
    tracked: Collection[str] | None = None,
) -> str:
    """The whole report as one string (tests, small DBs): ``write_status`` into memory."""
    out = io.StringIO()
    view = StatusView(as_json=as_json, limit=limit, tracked=tracked, now_ms=now_ms)
    await asyncio.to_thread(write_status, path, out, view)
    return out.getvalue().rstrip("\n")
