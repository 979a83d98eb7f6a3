"""The things the benchmark compares, each run in a worker process of its own.

Each variant polls the same N invocations on the same emulator at the same concurrency for a
fixed duration and reports polls, process CPU time, peak RSS and, for the watcher, scheduling
lag. A worker process per variant keeps CPU and RSS figures clean: the emulator runs in yet
another process, so none of its work is counted. The watcher's own variants are in ``ours``.

    python -m watcher.devtools.bench.variants VARIANT '{"url": ..., ...}'   (prints one JSON line)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from watcher.devtools.bench.measure import FN, Params, invocation_ids, load_loop, measure
from watcher.devtools.bench.ours import run_delivery, run_watcher
from watcher.devtools.bench.outbox import run_outbox
from watcher.devtools.bench.scenario import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ACCOUNT_ID,
    FUNCTION,
    SERVICE,
)
from watcher.fc.credentials import Credentials
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.requests import Operation, request_base, sign
from watcher.fc.signing import SignatureScheme


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
        for n, invocation_id in enumerate(invocation_ids(params))
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
        return await measure(
            params, sweep, lambda d: load_loop(d, int(params["concurrency"]), one, rate)
        )


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
    ids = invocation_ids(params)
    request = models.GetStatefulAsyncInvocationRequest()

    async def one(index: int) -> None:
        await client.get_stateful_async_invocation_async(
            SERVICE, FUNCTION, ids[index % len(ids)], request
        )

    async def warm_up() -> None:
        await asyncio.gather(*(one(i) for i in range(min(len(ids), 64))))

    return await measure(params, warm_up, lambda d: load_loop(d, int(params["concurrency"]), one))


async def run_sdk_sync(params: Params) -> Params:
    """The official SDK's blocking client in a plain loop: a cron script's way."""
    from alibabacloud_fc_open20210406 import models

    client = _sdk_client(params)
    ids = invocation_ids(params)
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

    return await measure(params, warm_up, run)


VARIANTS: dict[str, Callable[[Params], Coroutine[Any, Any, Params]]] = {
    "delivery": run_delivery,
    "outbox": run_outbox,
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
