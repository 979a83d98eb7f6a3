"""The replicas benchmark: 1, 2 and 3 ``fc-watcher run`` replicas sharing one PostgreSQL over
the same 10,000 tracked invocations (listed ids, 5 a function over 2,000 functions, so polled by
Get), beside one replica on SQLite; then SIGKILLs of a replica holding slots.

Measured per run once the slots are settled: Gets per invocation per cycle (double polling would
show), Lists, polls a second, each replica's slots, Gets and CPU (``/proc``), and observed-to-
delivered latency; on the last run, the takeover time after each kill (the ``slots`` table).
Set-up in ``replicas_setup``, the table in ``replicas_report``.

    python -m watcher.devtools.bench.replicas ['{"duration_s": 30, ...}']
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from watcher.devtools.bench.measure import Params, free_port
from watcher.devtools.bench.replicas_report import render_replicas
from watcher.devtools.bench.replicas_setup import (
    READY_S,
    REPLICAS_DEFAULTS,
    TICK_S,
    BenchError,
    Receiver,
    config,
    fresh_database,
    functions,
    percentile,
    postgres,
    scenario,
    settling,
    slot_owners,
    wait_until,
)
from watcher.devtools.emulator import Emulator, ManualClock


@dataclass
class Replica:
    name: str
    port: int
    process: asyncio.subprocess.Process

    def cpu_s(self) -> float:
        """User and system CPU of the process so far (``/proc``), in seconds."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * TICK_S

    async def gets(self, session: aiohttp.ClientSession) -> float:
        """Its Get requests to FC so far (``fc_watcher_api_requests_total``)."""
        async with session.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("fc_watcher_api_requests_total{") and 'operation="get"' in line
        )


class Replicas:
    """``fc-watcher run`` processes of one config in ``scratch``."""

    def __init__(self, config_path: Path, scratch: Path) -> None:
        self.config_path, self.scratch = config_path, scratch
        self.running: dict[str, Replica] = {}
        self.started = 0

    async def start(self) -> Replica:
        name, port = f"replica-{self.started:02d}", free_port()
        self.started += 1
        with (self.scratch / f"{self.config_path.stem}-{name}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "watcher", "--log-format", "json", "run",
                "-c", str(self.config_path), stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "FCW_REPLICA_ID": name, "FCW_HTTP_PORT": str(port)},
            )  # fmt: skip
        replica = self.running[name] = Replica(name, port, process)
        await wait_until(lambda: self._healthy(replica), f"{name} answering /healthz", READY_S, 0.2)
        return replica

    async def _healthy(self, replica: Replica) -> bool:
        if replica.process.returncode is not None:
            raise BenchError(f"{replica.name} exited with {replica.process.returncode}")
        url = f"http://127.0.0.1:{replica.port}/healthz"
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as session, session.get(url) as answer:
                return answer.status == 200
        return False

    async def kill(self, name: str) -> float:
        replica = self.running.pop(name)
        killed_at = time.monotonic()
        replica.process.send_signal(signal.SIGKILL)
        await replica.process.wait()
        return killed_at

    async def stop_all(self) -> None:
        running, self.running = self.running, {}
        for replica in running.values():
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in running.values():
            try:
                await asyncio.wait_for(replica.process.wait(), timeout=60)
            except TimeoutError:
                replica.process.kill()
                await replica.process.wait()


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one run needs at hand."""

    s: Params
    backend: str
    count: int
    emulator: Emulator
    clock: ManualClock
    receiver: Receiver
    replicas: Replicas
    state_url: str = ""
    result: Params = field(default_factory=dict)


async def _window(run: Run, session: aiohttp.ClientSession) -> None:
    """Measure ``duration_s`` while the manual clock moves on in real time."""
    stats, duration = run.emulator.app.stats, float(run.s["duration_s"])
    replicas = list(run.replicas.running.values())
    ids = [i for listed in functions(run.s).values() for i in listed]
    before_ids = {i: stats[f"requests:{i}"] for i in ids}
    before = (stats["requests"], sum(before_ids.values()))
    cpu_before = [r.cpu_s() for r in replicas]
    gets_before = [await r.gets(session) for r in replicas]
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < duration:
        run.clock.advance(elapsed - run.clock.elapsed_s())
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    gets = sum(stats[f"requests:{i}"] for i in ids) - before[1]
    cycles = elapsed / float(run.s["interval_s"])
    per_id = [stats[f"requests:{i}"] - before_ids[i] for i in ids]
    cpu = [r.cpu_s() - c for r, c in zip(replicas, cpu_before, strict=True)]
    replica_gets = [await r.gets(session) - g for r, g in zip(replicas, gets_before, strict=True)]
    run.result.update(
        gets_per_invocation_per_cycle=gets / len(ids) / cycles,
        max_gets_per_id_per_cycle=max(per_id) / cycles,
        lists=stats["requests"] - before[0] - gets,
        polls_per_s=gets / elapsed,
        cpu_share_per_replica=[c / elapsed for c in cpu],
        cpu_us_per_poll=sum(cpu) * 1e6 / max(gets, 1),
        gets_per_replica=[round(g) for g in replica_gets],
    )


async def _latency(run: Run) -> None:
    """Wait for every change's delivery; observed -> delivered p50/p99 in ms."""
    wanted = int(run.s["changes"])

    async def all_in() -> bool:
        return len({webhook_id for _, webhook_id, _ in run.receiver.arrivals}) >= wanted

    with contextlib.suppress(BenchError):
        await wait_until(all_in, f"{wanted} deliveries", 60)
    first: dict[str, float] = {}
    for arrived, webhook_id, observed_ms in run.receiver.arrivals:
        first.setdefault(webhook_id, arrived * 1000 - observed_ms)
    delays = list(first.values())
    run.result.update(
        delivered=len(first),
        same_id_redeliveries=len(run.receiver.arrivals) - len(first),
        latency_p50_ms=percentile(delays, 0.5),
        latency_p99_ms=percentile(delays, 0.99),
    )


async def takeovers(run: Run, kills: int, rng: random.Random) -> list[float]:
    """SIGKILL a replica holding slots ``kills`` times, restarting one in its place each time;
    seconds from each signal until all its slots are held by others."""
    times = []
    for _ in range(kills):
        names = set(run.replicas.running)
        await wait_until(settling(run.state_url, names), "settled slots", READY_S, 0.2)
        victim = rng.choice(sorted(names))
        held = {s for s, o in (await slot_owners(run.state_url)).items() if o == victim}
        killed_at = await run.replicas.kill(victim)

        async def taken(v: str = victim, h: set[int] = held) -> bool:
            owners = await slot_owners(run.state_url)
            return all(owners[s] not in (None, v) for s in h)

        bound = 4 * float(run.s["lease_s"]) + 10
        await wait_until(taken, f"{victim}'s {len(held)} slots taken over", bound, 0.02)
        times.append(time.monotonic() - killed_at)
        await run.replicas.start()
    return times


async def _start(run: Run, scratch: Path, admin_url: str) -> None:
    """The emulator, the receiver, the state and ``count`` replicas, settled."""
    await run.emulator.start()
    await run.receiver.start()
    state: dict[str, Any] = {"path": str(scratch / f"state-{run.count}.db")}
    if run.backend == "postgresql":
        run.state_url = await fresh_database(admin_url, f"fcw_bench_replicas_{run.count}")
        state = {"url": run.state_url, "lease_s": run.s["lease_s"]}
        state["replica_id"] = "${FCW_REPLICA_ID}"
    document = config(run.s, run.emulator.url, run.receiver.url, state)
    path = scratch / f"{run.backend}-{run.count}.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    run.replicas = Replicas(path, scratch)
    for _ in range(run.count):
        await run.replicas.start()
    if run.state_url:
        names = set(run.replicas.running)
        await wait_until(settling(run.state_url, names), "settled slots", READY_S, 0.2)
    # First polls are spread over one interval, and so are those of a slot handed over; then
    # the first sightings (a status change and an event each) are delivered.
    await asyncio.sleep(1.5 * float(run.s["interval_s"]))
    wanted = 2 * int(run.s["invocations"])

    async def delivered() -> bool:
        return len(run.receiver.ids) >= wanted

    await wait_until(delivered, f"the {wanted} first sightings delivered", 300, 0.2)


async def run_one(s: Params, backend: str, count: int, admin_url: str, scratch: Path) -> Params:
    """One run: ``count`` replicas on ``backend``, measured; the last also killed."""
    clock = ManualClock()
    run = Run(s, backend, count, Emulator(scenario(s), clock=clock), clock, Receiver(),
              Replicas(scratch / "unused", scratch))  # fmt: skip
    run.result.update(backend=backend, replicas=count)
    try:
        await _start(run, scratch, admin_url)
        async with aiohttp.ClientSession() as session:
            await _window(run, session)
        await _latency(run)
        if run.state_url:
            owners = await slot_owners(run.state_url)
            run.result["slots_per_replica"] = [
                sum(1 for o in owners.values() if o == name) for name in run.replicas.running
            ]
        if run.state_url and count == max(s["replicas"]) and int(s["kills"]):
            times = await takeovers(run, int(s["kills"]), random.Random(5))
            run.result["takeover_s"] = times
    finally:
        await run.replicas.stop_all()
        await run.receiver.stop()
        await run.emulator.stop()
    return run.result


async def _run_all(s: Params, progress: Callable[[str], Any]) -> Params:
    plan = [("postgresql", n) for n in s["replicas"]]
    if s["sqlite"]:
        plan.insert(0, ("sqlite", 1))
    runs = []
    with tempfile.TemporaryDirectory(prefix="fcw-bench-replicas-") as scratch:
        async with postgres(s["pg_url"]) as admin_url:
            for backend, count in plan:
                progress(f"replicas: {count} on {backend}, {s['invocations']} invocations ...")
                runs.append(await run_one(s, backend, count, admin_url, Path(scratch)))
    settings = {k: v for k, v in s.items() if k != "pg_url"}
    return {"settings": settings, "cpus": os.cpu_count(), "runs": runs}


def run_replicas(settings: Params | None = None, progress: Callable[[str], Any] = print) -> Params:
    """Every run of the replicas benchmark (``REPLICAS_DEFAULTS`` with ``settings`` over them);
    the report for ``render_replicas``."""
    return asyncio.run(_run_all({**REPLICAS_DEFAULTS, **(settings or {})}, progress))


if __name__ == "__main__":
    overrides: Params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    result = run_replicas(overrides, progress=lambda line: print(line, file=sys.stderr))
    print("\n".join(render_replicas(result)))
    print(json.dumps(result))
