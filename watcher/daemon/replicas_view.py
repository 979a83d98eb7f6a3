"""``fc-watcher status`` on a PostgreSQL state: the replicas sharing it, their slots and their
last heartbeat (as the database's clock has it), as a table or as JSON. Read-only.

The rest of ``status`` (invocations, the outbox, silences) still reads a SQLite state only;
on PostgreSQL the report says so in one line after the replicas.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from watcher.config.load import ConfigError, load_config
from watcher.config.models import StateSettings
from watcher.core.slots import SLOTS
from watcher.store.postgres.settings import postgres_target
from watcher.store.records import ReplicaInfo

_HEADER = ("REPLICA", "SLOTS", "HELD", "LAST HEARTBEAT", "STATE")


def slot_ranges(slots: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as "0-2,5,7-8" ("-" for none)."""
    parts: list[str] = []
    start = previous = None
    for slot in [*sorted(slots), None]:
        if slot is not None and previous is not None and slot == previous + 1:
            previous = slot
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = slot
    return ",".join(parts) or "-"


def _ago(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def replicas_lines(replicas: Sequence[ReplicaInfo], lease_s: float) -> list[str]:
    """The REPLICAS section: one row per replica, then how many slots are held."""
    rows = [
        (r.replica, str(len(r.slots)), slot_ranges(r.slots), _ago(r.age_ms),
         "live" if r.live else "gone (no heartbeat within a lease)")
        for r in replicas
    ]  # fmt: skip
    table = [_HEADER, *rows]
    widths = [max(len(row[n]) for row in table) for n in range(len(_HEADER) - 1)]
    lines = [f"REPLICAS (lease {lease_s:g} s, heartbeat every {lease_s / 3:.3g} s)"]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    held = sum(len(r.slots) for r in replicas)
    lines.append(f"slots held: {held} of {SLOTS}" + ("" if held == SLOTS else " (rest unowned)"))
    return lines


def replicas_json(replicas: Sequence[ReplicaInfo]) -> dict[str, Any]:
    return {
        "replicas": [
            {
                "id": r.replica,
                "slots": list(r.slots),
                "startedMs": r.started_ms,
                "heartbeatMs": r.heartbeat_ms,
                "heartbeatAgeMs": r.age_ms,
                "live": r.live,
            }
            for r in replicas
        ],
        "slots": SLOTS,
    }


async def read_replicas(state: StateSettings) -> list[ReplicaInfo]:
    """The replicas of the PostgreSQL state ``state`` names (read-only; ``StateStoreError``)."""
    from watcher.store.postgres import open_postgres

    target = postgres_target(state)
    assert target is not None, "a PostgreSQL state"
    store = await open_postgres(target[0], password=target[1], readonly=True, pool_size=1)
    try:
        return await store.replicas(int(state.lease_s * 1000))
    finally:
        await store.close()


def postgres_status(config_path: Path, out: TextIO, *, as_json: bool) -> bool:
    """Write the PostgreSQL report for the config at ``config_path``; False when its state is
    not in PostgreSQL (or the config cannot be read: ``status`` then says why, as before)."""
    try:
        state = load_config(config_path).config.state
    except ConfigError:
        return False
    if postgres_target(state) is None:
        return False
    replicas = asyncio.run(read_replicas(state))
    if as_json:
        out.write(json.dumps(replicas_json(replicas), indent=2) + "\n")
        return True
    lines = replicas_lines(replicas, state.lease_s)
    lines += [
        "",
        "(invocations, the outbox and silences: status reads a SQLite state only, so far)",
    ]
    out.write("\n".join(lines) + "\n")
    return True
