"""The watcher's own benchmark contenders, wired by the daemon's composition root.

``run_watcher`` is the real polling path (scheduler, limiter, signed client, diff, SQLite
state, Prometheus metrics) and ``run_delivery`` the change-to-webhook path. Both are built by
``watcher.daemon.build.build`` from a config, as the daemon builds itself, so the figures are
those of what ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from watcher.config.models import Config, PollSettings, Tracked
from watcher.core.clock import SystemClock
from watcher.core.invocation import InvocationRef
from watcher.daemon.build import Parts, build
from watcher.devtools.bench.measure import FN, Params, invocation_ids, measure
from watcher.devtools.bench.scenario import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ACCOUNT_ID,
    FUNCTION,
    SERVICE,
)
from watcher.engine.poll import PollOutcome
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics


def _config(params: Params, state: Path, poll: PollSettings, **delivery: Any) -> Config:
    """A config for the bench emulator; ``delivery`` gives ``sinks`` and ``routes``."""
    return Config.model_validate(
        {
            "fc": {
                "account_id": ACCOUNT_ID,
                "region": "cn-hangzhou",
                "endpoint": params["url"],
                "access_key_id": ACCESS_KEY_ID,
                "access_key_secret": ACCESS_KEY_SECRET,
            },
            "state": {"path": state},
            "poll": poll.model_dump(),
            "watch": [{"service": SERVICE, "function": FUNCTION, "invocations": ["bench-0"]}],
            **delivery,
        }
    )


def _tracked(params: Params) -> list[Tracked]:
    return [Tracked(ref=InvocationRef(FN, i), labels={}) for i in invocation_ids(params)]


# No log sink, and no routes: a webhook then gets only alert-worthy transitions, and the steady
# scenario has none, so the polling path writes no outbox rows, as the bench has always measured.
_NO_DELIVERY: dict[str, Any] = {
    "sinks": [{"name": "alerts", "type": "webhook", "url": "http://127.0.0.1:9/x"}]
}


async def run_watcher(params: Params) -> Params:
    """The watcher's real polling path: scheduler, signed client, diff, SQLite state."""
    interval_s = float(params.get("interval_s", 0.05))
    poll = PollSettings(
        interval_s=interval_s,
        max_interval_s=interval_s,
        jitter=float(params.get("jitter", 0.0)),
        concurrency=int(params["concurrency"]),
    )
    lags: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        config = _config(params, Path(scratch) / "state.db", poll, **_NO_DELIVERY)
        store = await SqliteStore.open(config.state.sqlite_path())
        connector = aiohttp.TCPConnector(limit=poll.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            parts = await build(
                config,
                _tracked(params),
                store=store,
                session=session,
                clock=SystemClock(),
                rng=random.Random(0),
                metrics=Metrics(),  # the daemon always keeps its Prometheus metrics
                on_lag=lags.append,
            )
            result = await _measure_polls(params, parts, Path(scratch), lags)
        await store.close()
    lags.sort()
    if lags:
        result["lag_p50_ms"] = lags[len(lags) // 2] * 1000
        result["lag_p99_ms"] = lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
    return result


async def _measure_polls(params: Params, parts: Parts, scratch: Path, lags: list[float]) -> Params:
    scheduler = parts.scheduler
    files: dict[str, Any] = {}

    async def warm_up() -> None:
        await scheduler.poll_all()  # first sightings: every invocation commits once
        files.update(_file_state(scratch))
        scheduler.spread_first_polls()
        lags.clear()

    async def run(duration_s: float) -> int:
        before = sum(scheduler.outcomes.values())
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(duration_s, stop.set)
        await scheduler.run(stop)
        return sum(scheduler.outcomes.values()) - before

    result = await measure(params, warm_up, run)
    result["db_changed_during_unchanged_polls"] = _file_state(scratch) != files
    result["unchanged_polls"] = scheduler.outcomes[PollOutcome.UNCHANGED]
    return result


def _file_state(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.glob("state.db*")}


async def _hook_receiver(
    expected: int, latencies_ms: list[float]
) -> tuple[web.AppRunner, str, asyncio.Event]:
    """A webhook receiver in this process (so both ends read the same clock) that records
    the change-to-delivery latency of every Failed transition."""
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        data = json.loads(await request.read())["data"]
        if data["type"] == "invocation.status_changed" and data["status"] == "Failed":
            latencies_ms.append(time.time() * 1000 - data["observedMs"])
            if len(latencies_ms) >= expected:
                all_in.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", all_in


async def run_delivery(params: Params) -> Params:
    """Change-to-delivery latency: from the poll that sees a change to a webhook receiver
    having the delivery."""
    latencies_ms: list[float] = []
    expected = int(params["invocations"])
    runner, hook_url, all_in = await _hook_receiver(expected, latencies_ms)
    poll = PollSettings(interval_s=0.2, max_interval_s=0.2, jitter=0.1, concurrency=32)
    delivery = {
        "sinks": [{"name": "hook", "type": "webhook", "url": hook_url}],
        "routes": [{"match": {"status": ["Failed"]}, "sinks": ["hook"]}],
    }
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        config = _config(params, Path(scratch) / "state.db", poll, **delivery)
        store = await SqliteStore.open(config.state.sqlite_path())
        async with aiohttp.ClientSession() as session:
            parts = await build(
                config,
                _tracked(params),
                store=store,
                session=session,
                clock=SystemClock(),
                rng=random.Random(),
                metrics=None,
            )
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(parts.scheduler.run(stop)),
                asyncio.create_task(parts.dispatcher.run(stop)),
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), timeout=float(params["duration_s"]))
            stop.set()
            await asyncio.gather(*tasks)
        await store.close()
    await runner.cleanup()
    latencies_ms.sort()
    count = len(latencies_ms)
    return {
        "deliveries": count,
        "expected": expected,
        "p50_ms": latencies_ms[count // 2] if count else None,
        "p99_ms": latencies_ms[min(count - 1, int(count * 0.99))] if count else None,
        "max_ms": latencies_ms[-1] if count else None,
    }
