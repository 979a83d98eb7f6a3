"""The things the benchmark compares, each run in a worker process of its own.

Each variant polls the same N invocations on the same emulator at the same concurrency for a
fixed duration and reports polls, process CPU time, peak RSS and, for the watcher, scheduling
lag. A worker process per variant keeps CPU and RSS figures clean: the emulator runs in yet
another process, so none of its work is counted.

    python -m watcher.devtools.bench.variants VARIANT '{"url": ..., ...}'   (prints one JSON line)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from watcher.config.models import PollSettings, Tracked
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.route import route
from watcher.devtools.bench.scenario import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ACCOUNT_ID,
    FUNCTION,
    SERVICE,
)
from watcher.engine.poll import PollOutcome
from watcher.engine.scheduler import Scheduler
from watcher.fc.client import FcClient
from watcher.fc.credentials import Credentials, StaticCredentialSource
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.requests import Operation, request_base, sign
from watcher.fc.signing import SignatureScheme
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

Params = dict[str, Any]
FN = FunctionRef(Api.FC2, FUNCTION, SERVICE)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ids(params: Params) -> list[str]:
    return [f"bench-{n:06d}" for n in range(int(params["invocations"]))]


async def _measure(
    params: Params, warm_up: Callable[[], Awaitable[None]], run: Callable[[float], Awaitable[int]]
) -> Params:
    """Warm up, then run for the duration and measure CPU per completed poll."""
    await warm_up()
    cpu_before = _cpu_s()
    started = time.perf_counter()
    polls = await run(float(params["duration_s"]))
    elapsed = time.perf_counter() - started
    cpu = _cpu_s() - cpu_before
    return {
        "polls": polls,
        "elapsed_s": elapsed,
        "polls_per_s": polls / elapsed,
        "cpu_us_per_poll": cpu * 1e6 / max(polls, 1),
        "cpu_share": cpu / elapsed,
        "peak_rss_mb": _peak_rss_mb(),
    }


async def run_floor(params: Params) -> Params:
    """A bare aiohttp GET-and-parse loop: headers signed once in advance, no state, no diff."""
    endpoint = resolve_endpoint(ACCOUNT_ID, "cn-hangzhou", url=params["url"])
    credentials = Credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET)
    now = time.time()
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    iso_date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    requests = [
        sign(
            request_base(
                operation=Operation.GET,
                method="GET",
                function_ref=FN,
                invocation_id=invocation_id,
                query={},
                endpoint=endpoint,
                account_id=ACCOUNT_ID,
                credentials=credentials,
                scheme=SignatureScheme.ACS3,
            ),
            http_date=http_date,
            iso_date=iso_date,
            nonce=f"{n:032x}",
        )
        for n, invocation_id in enumerate(_ids(params))
    ]
    connector = aiohttp.TCPConnector(limit=int(params["concurrency"]))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int) -> None:
            prepared = requests[index % len(requests)]
            async with session.get(prepared.url, headers=prepared.headers) as r:
                json.loads(await r.read())

        async def sweep() -> None:
            await asyncio.gather(*(one(i) for i in range(len(requests))))

        rate = params.get("rate_per_s")
        return await _measure(
            params, sweep, lambda d: _loop(d, int(params["concurrency"]), one, rate)
        )


async def _loop(
    duration_s: float,
    concurrency: int,
    one: Callable[[int], Awaitable[None]],
    rate_per_s: float | None = None,
) -> int:
    """``concurrency`` workers calling ``one`` round robin until the duration is up, paced to
    ``rate_per_s`` in all when given (to compare CPU per poll at the same rate)."""
    started = time.perf_counter()
    deadline = started + duration_s
    counter = 0

    async def worker() -> int:
        nonlocal counter
        done = 0
        while time.perf_counter() < deadline:
            counter += 1
            if rate_per_s:
                ahead_s = started + counter / rate_per_s - time.perf_counter()
                if ahead_s > 0:
                    await asyncio.sleep(ahead_s)
            await one(counter)
            done += 1
        return done

    return sum(await asyncio.gather(*(worker() for _ in range(concurrency))))


async def run_watcher(params: Params) -> Params:
    """The watcher's real polling path: scheduler, signed client, diff, SQLite state."""
    settings = PollSettings(
        interval_s=float(params.get("interval_s", 0.05)),
        max_interval_s=float(params.get("interval_s", 0.05)),
        jitter=float(params.get("jitter", 0.0)),
        concurrency=int(params["concurrency"]),
    )
    lags: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        store = await SqliteStore.open(Path(scratch) / "state.db")
        connector = aiohttp.TCPConnector(limit=settings.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = FcClient(
                session,
                endpoint=resolve_endpoint(ACCOUNT_ID, "cn-hangzhou", url=params["url"]),
                account_id=ACCOUNT_ID,
                credentials=StaticCredentialSource(Credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET)),
            )
            scheduler = Scheduler(
                [Tracked(ref=InvocationRef(FN, i), labels={}) for i in _ids(params)],
                {},
                client=client,
                store=store,
                router=lambda transitions: route(transitions, [], []),
                settings=settings,
                rng=random.Random(0),
                metrics=Metrics(),  # the daemon always keeps its Prometheus metrics
                on_lag=lags.append,
            )
            files: dict[str, Any] = {}

            async def warm_up() -> None:
                await scheduler.poll_all()  # first sightings: every invocation commits once
                files.update(_file_state(Path(scratch)))
                scheduler.spread_first_polls()
                lags.clear()

            async def run(duration_s: float) -> int:
                before = sum(scheduler.outcomes.values())
                stop = asyncio.Event()
                asyncio.get_running_loop().call_later(duration_s, stop.set)
                await scheduler.run(stop)
                return sum(scheduler.outcomes.values()) - before

            result = await _measure(params, warm_up, run)
            result["db_changed_during_unchanged_polls"] = _file_state(Path(scratch)) != files
            result["unchanged_polls"] = scheduler.outcomes[PollOutcome.UNCHANGED]
        await store.close()
    lags.sort()
    if lags:
        result["lag_p50_ms"] = lags[len(lags) // 2] * 1000
        result["lag_p99_ms"] = lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
    return result


def _file_state(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.glob("state.db*")}


def _sdk_client(params: Params) -> Any:
    from alibabacloud_fc_open20210406.client import Client
    from alibabacloud_tea_openapi import models as openapi_models

    host = params["url"].removeprefix("http://")
    config = openapi_models.Config(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        endpoint=host,
        protocol="http",
    )
    return Client(config)


async def run_sdk_async(params: Params) -> Params:
    """The official SDK's async methods at the same concurrency."""
    from alibabacloud_fc_open20210406 import models

    client = _sdk_client(params)
    ids = _ids(params)
    request = models.GetStatefulAsyncInvocationRequest()

    async def one(index: int) -> None:
        await client.get_stateful_async_invocation_async(
            SERVICE, FUNCTION, ids[index % len(ids)], request
        )

    async def warm_up() -> None:
        await asyncio.gather(*(one(i) for i in range(min(len(ids), 64))))

    return await _measure(params, warm_up, lambda d: _loop(d, int(params["concurrency"]), one))


async def run_sdk_sync(params: Params) -> Params:
    """The official SDK's blocking client in a plain loop: a cron script's way."""
    from alibabacloud_fc_open20210406 import models

    client = _sdk_client(params)
    ids = _ids(params)
    request = models.GetStatefulAsyncInvocationRequest()

    def loop(duration_s: float) -> int:
        deadline = time.perf_counter() + duration_s
        done = 0
        while time.perf_counter() < deadline:
            client.get_stateful_async_invocation(SERVICE, FUNCTION, ids[done % len(ids)], request)
            done += 1
        return done

    async def warm_up() -> None:
        await asyncio.to_thread(loop, 0.5)

    async def run(duration_s: float) -> int:
        return loop(duration_s)  # blocking on purpose: that is what is measured

    return await _measure(params, warm_up, run)


async def run_delivery(params: Params) -> Params:
    """Change-to-delivery latency: from the poll that sees a change to a webhook receiver
    (in this process, so both ends read the same clock) having the delivery."""
    from aiohttp import web

    from watcher.config.delivery import WebhookSinkSettings
    from watcher.core.route import Route
    from watcher.delivery.dispatcher import Dispatcher
    from watcher.delivery.sinks.webhook import WebhookSink

    latencies_ms: list[float] = []
    expected = int(params["invocations"])
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
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    settings = PollSettings(interval_s=0.2, max_interval_s=0.2, jitter=0.1, concurrency=32)
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        store = await SqliteStore.open(Path(scratch) / "state.db")
        async with aiohttp.ClientSession() as session:
            sink = WebhookSink(
                WebhookSinkSettings.model_validate(
                    {"name": "hook", "type": "webhook", "url": hook_url}
                ),
                session,
            )
            dispatcher = Dispatcher(store, {"hook": sink})
            routes = [Route.model_validate({"match": {"status": ["Failed"]}, "sinks": ["hook"]})]
            scheduler = Scheduler(
                [Tracked(ref=InvocationRef(FN, i), labels={}) for i in _ids(params)],
                {},
                client=FcClient(
                    session,
                    endpoint=resolve_endpoint(ACCOUNT_ID, "cn-hangzhou", url=params["url"]),
                    account_id=ACCOUNT_ID,
                    credentials=StaticCredentialSource(
                        Credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET)
                    ),
                ),
                store=store,
                router=lambda transitions: route(transitions, routes, []),
                settings=settings,
                on_commit=dispatcher.wake,
            )
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(scheduler.run(stop)),
                asyncio.create_task(dispatcher.run(stop)),
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


VARIANTS: dict[str, Callable[[Params], Coroutine[Any, Any, Params]]] = {
    "delivery": run_delivery,
    "watcher": run_watcher,
    "floor": run_floor,
    "sdk-async": run_sdk_async,
    "sdk-sync": run_sdk_sync,
}


def main() -> None:
    from watcher.daemon.log import configure_logging
    from watcher.daemon.runtime import tune_gc

    configure_logging(level="warning", log_format="json", stream=sys.stderr)
    tune_gc()  # every contender on the daemon's interpreter settings, the SDK's too
    variant, raw = sys.argv[1], sys.argv[2]
    print(json.dumps(asyncio.run(VARIANTS[variant](json.loads(raw)))))


if __name__ == "__main__":
    main()
