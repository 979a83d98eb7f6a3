"""The delivery contenders: the real outbox (built by ``build``) draining to a webhook receiver
in a process of its own, in three conditions.

- ``backlog``: rows pile up while the receiver is down, then it comes back: how long until all
  are delivered, in order per invocation.
- ``flaky``: the receiver fails a third of the attempts at random while rows arrive steadily:
  commit-to-delivered latency, and order.
- ``steady``: a healthy receiver and a full outbox: deliveries a second and the CPU they cost.

Rows are committed straight through the store (the poll path has its own contenders), with the
routes the config gives, so only delivery is measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from watcher.config.models import Config
from watcher.core.clock import SystemClock
from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot, Transition, TransitionType
from watcher.daemon.build import Parts, build
from watcher.devtools.bench.measure import FN, Params, cpu_s, free_port
from watcher.devtools.bench.scenario import ACCESS_KEY_ID, ACCESS_KEY_SECRET, ACCOUNT_ID
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

OUTBOX_RUNS: dict[str, Params] = {
    "backlog": {"mode": "backlog", "invocations": 1000, "per_invocation": 10, "outage_s": 20},
    "flaky": {"mode": "flaky", "invocations": 200, "rate_per_s": 200, "duration_s": 10},
    "steady": {"mode": "steady", "invocations": 2000, "per_invocation": 10},
}
"""The runs ``fc-watcher bench`` makes: 10,000 rows behind an outage, 2,000 rows at 200 a
second to a receiver failing a third, and 20,000 rows to a healthy one."""


class _Receiver:
    """The receiver process: started and stopped by the contender."""

    def __init__(self, port: int, fail_ratio: float, out: Path) -> None:
        self.port, self._fail_ratio, self._out = port, fail_ratio, out
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher.devtools.bench.receiver",
            str(self.port),
            str(self._fail_ratio),
            str(self._out),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        await self._process.stdout.readline()  # "ready": listening

    async def stop(self) -> list[tuple[float, str, str]]:
        """Stop it; what it accepted, in arrival order."""
        assert self._process is not None
        self._process.terminate()
        await self._process.wait()
        return [(float(t), str(w), str(i)) for t, w, i in json.loads(self._out.read_text())]


def _config(state: Path, port: int) -> Config:
    return Config.model_validate(
        {
            "fc": {
                "account_id": ACCOUNT_ID,
                "region": "cn-hangzhou",
                "endpoint": "http://127.0.0.1:9",
                "access_key_id": ACCESS_KEY_ID,
                "access_key_secret": ACCESS_KEY_SECRET,
            },
            "state": {"path": state},
            "watch": [{"service": "s", "function": "f", "invocations": ["unused"]}],
            "sinks": [{"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}],
            "routes": [{"sinks": ["hook"]}],
        }
    )


async def _commit(parts: Parts, invocation: str, count: int, start: int) -> list[str]:
    """Commit ``count`` transitions of one invocation; their ids, in commit order."""
    ref = InvocationRef(FN, invocation)
    now_ms = int(time.time() * 1000)
    transitions = [
        Transition(
            id=f"tr_bench_{invocation}_{start + n:05d}",
            type=TransitionType.STATUS_CHANGED,
            ref=ref,
            observed_ms=now_ms,
            status="Running",
        )
        for n in range(count)
    ]
    routes = parts.poller.router(transitions)
    await parts.store.commit(
        ref, Snapshot(status="Running"), transitions=transitions, routes=routes, now_ms=now_ms
    )
    parts.dispatcher.wake()
    return [t.id for t in transitions]


async def _drained(parts: Parts, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while (await parts.store.outbox_counts()).get("pending", 0):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _order_and_duplicates(
    committed: dict[str, list[str]], accepted: list[tuple[float, str, str]]
) -> Params:
    """Whether each invocation's rows arrived in commit order, and how many arrived twice."""
    seen: set[str] = set()
    arrived: dict[str, list[str]] = {}
    for _, webhook_id, invocation in accepted:
        if webhook_id not in seen:
            seen.add(webhook_id)
            arrived.setdefault(invocation, []).append(webhook_id)
    missing = sum(len(ids) for ids in committed.values()) - len(seen)
    in_order = all(arrived.get(inv, []) == ids for inv, ids in committed.items())
    return {
        "in_order": in_order and missing == 0,
        "missing": missing,
        "duplicates": len(accepted) - len(seen),
    }


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


Mode = Callable[[Params, Parts, _Receiver], Awaitable[Params]]


async def _backlog(params: Params, parts: Parts, receiver: _Receiver) -> Params:
    """Rows committed and tried while the receiver is down; then it comes back."""
    committed = {
        f"inv-{n:05d}": await _commit(parts, f"inv-{n:05d}", int(params["per_invocation"]), 0)
        for n in range(int(params["invocations"]))
    }
    await asyncio.sleep(float(params["outage_s"]))
    await receiver.start()
    back = time.monotonic()
    drained = await _drained(parts, timeout_s=120)
    drain_s = time.monotonic() - back
    rows = sum(len(ids) for ids in committed.values())
    return {
        "rows": rows,
        "outage_s": params["outage_s"],
        "drained": drained,
        "drain_s": drain_s,
        "deliveries_per_s_after_return": rows / drain_s,
        **_order_and_duplicates(committed, await receiver.stop()),
    }


async def _flaky(params: Params, parts: Parts, receiver: _Receiver) -> Params:
    """Rows arrive at a steady rate; the receiver fails a third of the attempts."""
    await receiver.start()
    committed: dict[str, list[str]] = {}
    committed_at: dict[str, float] = {}
    total = int(float(params["rate_per_s"]) * float(params["duration_s"]))
    started = time.monotonic()
    for n in range(total):
        invocation = f"inv-{n % int(params['invocations']):05d}"
        ids = await _commit(parts, invocation, 1, len(committed.get(invocation, [])))
        committed.setdefault(invocation, []).extend(ids)
        committed_at[ids[0]] = time.time()
        ahead_s = started + (n + 1) / float(params["rate_per_s"]) - time.monotonic()
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)
    drained = await _drained(parts, timeout_s=120)
    accepted = await receiver.stop()
    first: dict[str, float] = {}
    for arrival_s, webhook_id, _ in accepted:
        first.setdefault(webhook_id, arrival_s)
    latencies_s = [first[tid] - at for tid, at in committed_at.items() if tid in first]
    return {
        "rows": total,
        "drained": drained,
        "p50_s": _percentile(latencies_s, 0.5),
        "p99_s": _percentile(latencies_s, 0.99),
        **_order_and_duplicates(committed, accepted),
    }


async def _steady(params: Params, parts: Parts, receiver: _Receiver) -> Params:
    """A full outbox to a healthy receiver: deliveries a second and their CPU."""
    await receiver.start()
    committed = {
        f"inv-{n:05d}": await _commit(parts, f"inv-{n:05d}", int(params["per_invocation"]), 0)
        for n in range(int(params["invocations"]))
    }
    rows = sum(len(ids) for ids in committed.values())
    cpu_before, started = cpu_s(), time.perf_counter()
    stop = asyncio.Event()
    task = asyncio.create_task(parts.dispatcher.run(stop))
    drained = await _drained(parts, timeout_s=120)
    elapsed_s, cpu = time.perf_counter() - started, cpu_s() - cpu_before
    stop.set()
    await task
    return {
        "rows": rows,
        "drained": drained,
        "deliveries_per_s": rows / elapsed_s,
        "cpu_share": cpu / elapsed_s,
        "cpu_us_per_delivery": cpu * 1e6 / rows,
        **_order_and_duplicates(committed, await receiver.stop()),
    }


async def run_outbox(params: Params) -> Params:
    """One delivery run (``params["mode"]``), on a fresh state and receiver."""
    mode: Mode = {"backlog": _backlog, "flaky": _flaky, "steady": _steady}[params["mode"]]
    fail_ratio = 1 / 3 if params["mode"] == "flaky" else 0.0
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        port = free_port()
        receiver = _Receiver(port, fail_ratio, Path(scratch) / "accepted.json")
        config = _config(Path(scratch) / "state.db", port)
        store = await SqliteStore.open(config.state.sqlite_path())
        async with aiohttp.ClientSession() as session:
            parts = await build(
                config,
                [],
                store=store,
                session=session,
                clock=SystemClock(),
                rng=random.Random(1),
                metrics=Metrics(),
            )
            if params["mode"] == "steady":
                result = await mode(params, parts, receiver)
            else:
                stop = asyncio.Event()
                task = asyncio.create_task(parts.dispatcher.run(stop))
                result = await mode(params, parts, receiver)
                stop.set()
                await task
        await store.close()
    return result


def render_outbox(runs: Params) -> list[str]:
    """The delivery runs in three sentences, for the report."""
    backlog, flaky, steady = runs["backlog"], runs["flaky"], runs["steady"]
    return [
        f"backlog: {backlog['rows']} rows behind a {backlog['outage_s']} s outage delivered "
        f"{backlog['drain_s']:.1f} s after the receiver's return; in order: "
        f"{'yes' if backlog['in_order'] else 'NO'}, duplicates {backlog['duplicates']}",
        f"flaky (1/3 failing): commit -> delivered p50 {flaky['p50_s']:.2f} s, p99 "
        f"{flaky['p99_s']:.2f} s over {flaky['rows']} rows; in order: "
        f"{'yes' if flaky['in_order'] else 'NO'}",
        f"steady: {steady['deliveries_per_s']:.0f} deliveries/s to one webhook, "
        f"{steady['cpu_share'] * 100:.0f}% of a core, {steady['cpu_us_per_delivery']:.0f} µs each",
    ]
