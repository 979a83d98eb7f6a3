"""Retention: the state keeps what is still useful and forgets the rest, a batch at a time.

An invocation is pruned once it is finished (terminal, or given up as not found), has not
changed for ``retention_days``, and has nothing pending or dead-lettered in the outbox: its
transitions and delivered rows go. Pending and dead rows are never pruned, because that would
lose an alert. A still-tracked invocation keeps its snapshot, so that it is not reported
again as a first sighting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection

import structlog

from watcher.core.clock import Clock
from watcher.store.errors import StateStoreError
from watcher.store.protocols import Prunable

_log = structlog.get_logger("watcher.retention")

_DAY_MS = 86_400_000


async def prune_once(
    store: Prunable,
    *,
    retention_days: float,
    protected_keys: Collection[str],
    clock: Clock,
    batch: int = 500,
) -> int:
    """One full pass in batches (each its own short transaction); returns invocations pruned."""
    cutoff_ms = clock.wall_ms() - int(retention_days * _DAY_MS)
    after_key: str | None = None
    pruned = transitions = rows = 0
    while True:
        result = await store.prune(
            changed_before_ms=cutoff_ms,
            protected_keys=protected_keys,
            after_key=after_key,
            batch=batch,
        )
        pruned += result.invocations
        transitions += result.transitions
        rows += result.outbox_rows
        if result.next_after_key is None:
            break
        after_key = result.next_after_key
        await asyncio.sleep(0)  # let polls and deliveries in between batches
    if transitions or rows or pruned:
        _log.info("state_pruned", invocations=pruned, transitions=transitions, outbox_rows=rows)
    return pruned


async def run_retention(
    store: Prunable,
    *,
    retention_days: float,
    protected_keys: Callable[[], Collection[str]],
    clock: Clock,
    stop: asyncio.Event,
    every_s: float = 3600.0,
) -> None:
    """Prune at start and then every ``every_s`` until ``stop`` is set.

    A failed pass is logged and tried again next time: retention must never stop the daemon.
    """
    while not stop.is_set():
        try:
            await prune_once(
                store, retention_days=retention_days, protected_keys=protected_keys(), clock=clock
            )
        except StateStoreError as exc:
            _log.warning("state_prune_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
