"""Last-poll times, persisted every ``every_s`` while the daemon runs.

An unchanged poll writes nothing (that is what keeps 100,000 idle invocations cheap), so
without this the state DB's last-poll times, which ``fc-watcher status`` shows, would move only
when an invocation changes or the daemon stops. Every ``every_s`` this writes, in one
transaction, the times that moved since its last write; an idle run writes nothing at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from watcher.store.errors import StateStoreError

RECORD_POLLED_EVERY_S = 30.0

_log = structlog.get_logger("watcher.service")


class PollTimes(Protocol):
    """Where last-poll times come from (the scheduler)."""

    def last_polled_ms(self) -> dict[str, int]: ...


class PolledWriter(Protocol):
    """Where they go (the state store)."""

    async def record_polled(self, last_polled_ms: Mapping[str, int]) -> None: ...


async def record_changed(
    store: PolledWriter, scheduler: PollTimes, written: Mapping[str, int]
) -> Mapping[str, int]:
    """Write the times that differ from ``written`` (what the last call wrote); return what is
    written now. A failed write is logged and returns ``written``: it is tried again next time."""
    now = scheduler.last_polled_ms()  # a fresh dict: kept as is, not copied
    changed = {key: ms for key, ms in now.items() if written.get(key) != ms}
    if not changed:
        return now
    try:
        await store.record_polled(changed)
    except StateStoreError as exc:
        # A locked or full disk must not stop the daemon for a column only status reads.
        _log.warning("record_polled_failed", error=str(exc), rows=len(changed))
        return written
    return now


async def record_polled_every(
    store: PolledWriter, scheduler: PollTimes, every_s: float, stop: asyncio.Event
) -> None:
    """Until ``stop``: every ``every_s``, persist the last-poll times that changed. It writes
    nothing on stop: ``Watcher.shutdown`` records them all."""
    written: Mapping[str, int] = {}
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            written = await record_changed(store, scheduler, written)
        else:
            return


class InfoWriter(Protocol):
    async def save_daemon_info(self, values: Mapping[str, str], now_ms: int) -> None: ...


async def record_info_every(
    store: InfoWriter,
    values: Callable[[], Mapping[str, str]],
    wall_ms: Callable[[], int],
    every_s: float,
    stop: asyncio.Event,
) -> None:
    """Until ``stop``: every ``every_s``, record what the daemon says of itself for
    ``status`` (its API demand against the budget), only when it changed."""
    written: Mapping[str, str] = {}
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            now = dict(values())
            if now == written:
                continue
            try:
                await store.save_daemon_info(now, wall_ms())
            except StateStoreError as exc:
                _log.warning("daemon_info_not_saved", error=str(exc))
                continue
            written = now
        else:
            return
