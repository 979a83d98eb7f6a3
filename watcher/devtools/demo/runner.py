"""``fc-watcher demo``: the whole thing, on this machine, in well under a minute.

It starts three things in one process, all on 127.0.0.1: the FC emulator on the bundled
scenario (one invocation succeeds, one fails after retries, one gets stuck, one expires, one is
never found, and a batch submitted while the watcher runs is found by discovery), the real
watcher on a bundled config (routes to the log sink and to a webhook), and a webhook receiver
that verifies each delivery's Standard Webhooks signature and prints it. It stops by itself
once every kind of outcome was seen and delivered, prints a summary, and exits 0 (1 if
something expected never happened).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from watcher.config.load import load_config
from watcher.daemon.log import LogFormat, configure_logging
from watcher.daemon.service import Watcher
from watcher.devtools.emulator import Emulator, RealClock, load_scenario

DEADLINE_S = 45.0
# The demo signs and verifies with its own throwaway key; it opens nothing anywhere.
WEBHOOK_SECRET = "whsec_ZGVtby1vbmx5LXNlY3JldC1ub3QtZm9yLXVzZQ=="  # noqa: S105
EXPECTED = {
    "transcode-ok-0001": "Succeeded",
    "transcode-fail-0002": "Failed",
    "report-expired-0004": "Expired",
    # Found by discovery: submitted while the watcher runs, named by no config.
    "batch-0001": "Succeeded",
    "batch-0002": "Failed",
    "batch-0003": "Succeeded",
}


def bundled(name: str) -> Path:
    """A file shipped in the package's demo directory."""
    return Path(str(resources.files("watcher.devtools.demo").joinpath(name)))


class DemoReceiver:
    """A webhook receiver that checks signatures and prints what it gets."""

    def __init__(self) -> None:
        self.verified: list[dict[str, Any]] = []
        self.rejected = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            payload = Webhook(WEBHOOK_SECRET).verify(body, headers)
        except WebhookVerificationError:
            self.rejected += 1
            print("  webhook  REJECTED: bad signature", flush=True)
            return web.Response(status=400)
        data = payload["data"]
        self.verified.append(payload)
        print(
            f"  webhook  {payload['type']:<28} {data['invocationId']:<24} "
            f"{data.get('status') or ''} (signature ok, id {headers['webhook-id'][:15]}...)",
            flush=True,
        )
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _write_config(directory: Path, emulator_url: str, receiver_url: str) -> Path:
    document = json.loads(bundled("config.json").read_text())
    document["fc"]["endpoint"] = emulator_url
    document["state"]["path"] = str(directory / "state.db")
    for sink in document["sinks"]:
        if sink["type"] == "webhook":
            sink["url"] = receiver_url
            sink["secret"] = WEBHOOK_SECRET
    path = directory / "demo-config.yaml"
    path.write_text(json.dumps(document, indent=2))  # JSON is YAML
    path.chmod(0o600)
    return path


async def _done(watcher: Watcher, receiver: DemoReceiver) -> bool:
    kinds = Counter(t.type.value for t in await watcher.store.transitions())
    finals = {
        key.rsplit("/", 1)[1]: snapshot.status if snapshot else None
        for key, snapshot in watcher.scheduler.snapshots().items()
    }
    delivered = {p["data"]["id"] for p in receiver.verified}
    routed = (await watcher.store.outbox_counts()).get("pending", 0)
    return (
        all(finals.get(i) == s for i, s in EXPECTED.items())
        and kinds["invocation.stuck"] >= 1
        and kinds["invocation.not_found"] >= 1
        and routed == 0
        and len(delivered) >= 5
    )


async def _summary(watcher: Watcher, receiver: DemoReceiver, elapsed_s: float) -> list[str]:
    transitions = await watcher.store.transitions()
    kinds = Counter(t.type.value for t in transitions)
    lines = [
        "",
        f"summary after {elapsed_s:.1f} s",
        f"  transitions recorded: {len(transitions)} "
        + "("
        + ", ".join(f"{n} {kind.removeprefix('invocation.')}" for kind, n in sorted(kinds.items()))
        + ")",
        f"  webhook deliveries verified: {len(receiver.verified)}, rejected: {receiver.rejected}",
        "  final states:",
    ]
    for key, snapshot in sorted(watcher.scheduler.snapshots().items()):
        status = snapshot.status if snapshot and snapshot.status else "not found"
        extra = ""
        if snapshot and snapshot.stuck_reported:
            extra = f" (stuck, reported {snapshot.stuck_reported}x)"
        if snapshot and snapshot.already_retried_times:
            extra += f" after {snapshot.already_retried_times} retries"
        if watcher.scheduler.tracked.found_by_of(key) == "discovered":
            extra += " (found by discovery: no config names it)"
        lines.append(f"    {key.rsplit('/', 1)[1]:<24} {status}{extra}")
    return lines


async def run_demo(*, log_format: LogFormat = "auto") -> int:
    """Run the demo; 0 when every expected outcome was seen and delivered."""
    configure_logging(log_format=log_format)
    scenario = load_scenario(bundled("scenario.yaml"))
    receiver = DemoReceiver()
    await receiver.start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fc-watcher-demo-") as scratch:
        async with Emulator(scenario, clock=RealClock()) as emulator:
            config = _write_config(Path(scratch), emulator.url, receiver.url)
            print(f"emulator  {emulator.url}  (scenario: {len(scenario.invocations)} invocations,")
            print("          3 of them submitted while the watcher runs, for discovery to find)")
            print(f"receiver  {receiver.url}")
            print(f"watcher   config {config}\n", flush=True)
            watcher = Watcher(load_config(config))
            await watcher.startup()
            stop = asyncio.Event()
            task = asyncio.create_task(watcher.run_until_stopped(stop))
            ok = False
            while time.monotonic() - started < DEADLINE_S:
                await asyncio.sleep(0.25)
                if await _done(watcher, receiver):
                    ok = True
                    break
            stop.set()
            await task
            lines = await _summary(watcher, receiver, time.monotonic() - started)
            await watcher.shutdown()
    await receiver.stop()
    print("\n".join(lines))
    if not ok:
        print(f"\ndemo: not every expected outcome happened within {DEADLINE_S:g} s")
        return 1
    print("\ndemo: every outcome seen and delivered; try `make test` next")
    return 0
