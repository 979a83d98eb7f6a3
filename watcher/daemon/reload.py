"""Applying a changed config to running parts (SIGHUP), without losing any state.

Unchanged sinks are kept with their rate windows, changed ones rebuilt, removed ones closed;
the client is rebuilt only when the FC settings changed; routes, poll settings and the API
limits apply from the next poll; the config source tracks what the new file lists, and only
that. What needs a restart (state, http) is the service's to warn about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import structlog

from watcher.config.models import Config, LoadedConfig
from watcher.core.model import Snapshot
from watcher.daemon.build import Parts, make_client, make_router
from watcher.delivery.sinks import Sink
from watcher.delivery.sinks.registry import build_sink, delivery_policies
from watcher.engine.discovery import discover_specs

_log = structlog.get_logger("watcher.service")


def apply_config(
    parts: Parts,
    loaded: LoadedConfig,
    *,
    session: aiohttp.ClientSession,
    snapshots: Mapping[str, Snapshot],
) -> None:
    """Make ``parts`` run ``loaded`` from now on."""
    old, new = parts.config, loaded.config
    _replace_sinks(parts, old, new, session)
    if new.fc != old.fc:
        parts.client = make_client(new, session)
        parts.poller.client = parts.client
    parts.poller.router = make_router(new)
    parts.poller.settings = new.poll
    parts.scheduler.set_settings(new.poll)
    parts.limiter.set_limits(new.poll.concurrency, new.poll.api_budget_per_s)
    parts.config_source.replace(loaded.tracked, parts.scheduler, snapshots)
    parts.discovery.configure(discover_specs(new), snapshots, new.poll)
    parts.config = new
    _log.info(
        "config_reloaded",
        tracked=len(loaded.tracked),
        active=parts.scheduler.active_count,
        sinks=list(parts.sinks),
        routes=len(new.routes),
    )


def _replace_sinks(parts: Parts, old: Config, new: Config, session: aiohttp.ClientSession) -> None:
    old_entries = {s.name: s for s in old.sinks}
    sinks: dict[str, Sink] = {}
    for entry in new.sinks:
        keep = old_entries.get(entry.name) == entry and entry.name in parts.sinks
        sinks[entry.name] = (
            parts.sinks[entry.name] if keep else build_sink(entry, session, new.fc.region)
        )
    retired = [sink for name, sink in parts.sinks.items() if sinks.get(name) is not sink]
    for sink in sinks.values():
        sink.reopen()  # SIGHUP also means "logrotate moved the file"
    parts.dispatcher.replace_sinks(sinks, delivery_policies(new.sinks))
    parts.sinks = sinks
    for sink in retired:
        asyncio.get_running_loop().create_task(sink.close())


async def reload_on_request(
    requested: asyncio.Event, stop: asyncio.Event, reload: Callable[[], Awaitable[bool]]
) -> None:
    """Call ``reload`` each time ``requested`` is set (SIGHUP), until ``stop``."""
    while not stop.is_set():
        waiter = asyncio.ensure_future(requested.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        if requested.is_set() and not stop.is_set():
            requested.clear()
            await reload()
