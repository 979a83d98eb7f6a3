"""What every benchmark contender shares: the invocation ids, the round-robin load loop, and
the measurement of polls, CPU per poll and peak RSS around a contender's run."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from watcher.core.invocation import Api, FunctionRef
from watcher.devtools.bench.scenario import FUNCTION, SERVICE

Params = dict[str, Any]
FN = FunctionRef(Api.FC2, FUNCTION, SERVICE)


def free_port() -> int:
    """A free TCP port on loopback (for a server started in another process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def invocation_ids(params: Params) -> list[str]:
    return [f"bench-{n:06d}" for n in range(int(params["invocations"]))]


async def measure(
    params: Params, warm_up: Callable[[], Awaitable[None]], run: Callable[[float], Awaitable[int]]
) -> Params:
    """Warm up, then run for the duration and measure CPU per completed poll."""
    await warm_up()
    cpu_before = cpu_s()
    started = time.perf_counter()
    polls = await run(float(params["duration_s"]))
    elapsed = time.perf_counter() - started
    cpu = cpu_s() - cpu_before
    return {
        "polls": polls,
        "elapsed_s": elapsed,
        "polls_per_s": polls / elapsed,
        "cpu_us_per_poll": cpu * 1e6 / max(polls, 1),
        "cpu_share": cpu / elapsed,
        "peak_rss_mb": _peak_rss_mb(),
    }


async def load_loop(
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
