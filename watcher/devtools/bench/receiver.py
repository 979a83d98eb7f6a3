"""A webhook receiver for the delivery benchmark, in a process of its own so its CPU is not
the watcher's: it accepts Standard Webhooks deliveries on loopback, fails a share of them at
random (500), and on SIGTERM writes what it accepted, in arrival order, as JSON.

    python -m watcher.devtools.bench.receiver PORT FAIL_RATIO OUT_JSON
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path

from aiohttp import web


async def serve(port: int, fail_ratio: float, out: Path) -> None:
    """Serve until SIGTERM, then write ``[[arrival_s, webhook_id, invocation_id], ...]``."""
    accepted: list[tuple[float, str, str]] = []
    rng = random.Random(7)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if rng.random() < fail_ratio:
            return web.Response(status=500)
        data = json.loads(body)["data"]
        accepted.append((time.time(), request.headers["webhook-id"], data["invocationId"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    out.write_text(json.dumps(accepted))  # noqa: ASYNC240 (once, at exit)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])))
