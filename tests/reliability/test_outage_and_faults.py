"""A webhook receiver down for 60 s, and an FC API answering 20% of requests with faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EmulatorFactory, Receiver
from tests.integration.daemon import (
    committed,
    committed_is,
    expected_run,
    pending_outbox,
    read_log,
    run_cli,
    stop,
    transitions_in,
    wait_until,
    write_config,
)

TIMELINE = ["Enqueued", "Running", "Retrying", "Running", "Failed"]


def _inconsistent(entries: list[dict[str, Any]]) -> list[str]:
    """Transitions that contradict the timeline. A fault may hide a state (a status change may
    then skip it), but every event must be a real one, and every status change must move
    forward along the timeline from the status reported before it."""
    problems: list[str] = []
    position: dict[str, int] = {}
    last_status: dict[str, str | None] = {}
    for entry in entries:
        invocation = entry["invocation_id"]
        kind = entry["type"]
        timeline = ["Running"] if invocation.startswith("long-") else TIMELINE
        if kind == "invocation.event":
            event_id = entry["event_id"]
            real = (
                1 <= event_id <= len(timeline) and entry["event_status"] == timeline[event_id - 1]
            )
            if not real:
                problems.append(f"{invocation}: event {event_id} {entry['event_status']}")
        elif kind == "invocation.status_changed":
            if entry.get("previous_status") != last_status.get(invocation):
                problems.append(f"{invocation}: previous {entry.get('previous_status')}")
            start = position.get(invocation, 0)
            later = [i for i, s in enumerate(timeline) if s == entry["status"] and i >= start]
            if not later:
                problems.append(f"{invocation}: status {entry['status']} out of order")
                continue
            position[invocation] = later[0]
            last_status[invocation] = entry["status"]
        elif kind not in ("invocation.poll_failing", "invocation.poll_recovered"):
            problems.append(f"{invocation}: unexpected {kind}")
    problems += [
        f"{i}: ended {s}"
        for i, s in last_status.items()
        if s != "Failed" and not i.startswith("long-")
    ]
    return problems


def _script(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"job-{n}", "timeline": [{"at_s": t, "status": s} for t, s in enumerate(TIMELINE)]}
        for n in range(count)
    ]


async def test_receiver_down_for_60_s_gets_everything_in_order(
    start_emulator: EmulatorFactory, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """Nothing listens on the webhook's port for a minute; afterwards every transition arrives,
    in commit order per invocation."""
    script = _script(5)
    ids = [spec["id"] for spec in script]
    emu = await start_emulator(invocations=script)
    receiver = Receiver()
    await receiver.start()
    port = receiver.port
    await receiver.stop()  # down from the start
    config = write_config(tmp_path, emu.url, ids)
    document = json.loads(config.read_text())
    document["sinks"] = [
        {
            "name": "hook",
            "type": "webhook",
            "url": f"http://127.0.0.1:{port}/hook",
            "backoff_base_s": 0.5,
            "backoff_cap_s": 4,
        },
        {"name": "log", "type": "log"},
    ]
    document["routes"] = [{"sinks": ["hook", "log"]}]
    config.write_text(json.dumps(document))
    facts, progress = expected_run(emu, ids, range(5))
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    down_since = time.monotonic()
    for t, reached in enumerate(progress):
        emu.clock.advance(t - emu.clock.elapsed_s())
        await wait_until(committed_is(tmp_path / "state.db", reached), f"state at t={t}")
    await asyncio.sleep(max(0.0, 60 - (time.monotonic() - down_since)))
    # A delivery_retrying line stands for the attempts since the sink's last one.
    retries = sum(
        int(e.get("attempts", 1)) for e in read_log([log]) if e.get("event") == "delivery_retrying"
    )
    back = Receiver()
    await back.start(port)
    try:
        await wait_until(
            lambda: pending_outbox(tmp_path / "state.db") == 0, "delivery after the outage", 60
        )
        assert await stop(process) == 0
        order: dict[str, list[str]] = {}
        for _, _, body in back.requests:
            data = json.loads(body)["data"]
            order.setdefault(data["invocationId"], []).append(data["id"])
        committed_order: dict[str, list[str]] = {}
        for entry in transitions_in(read_log([log])):
            committed_order.setdefault(entry["invocation_id"], []).append(entry["transition_id"])
        report(
            f"outage 60 s: {retries} retried attempts while down, "
            f"{len(back.requests)} delivered after"
        )
        assert retries > 5
        assert set().union(*map(set, order.values())) == set(facts)
        assert order == committed_order
    finally:
        await back.stop()


async def test_twenty_percent_faulty_api(
    start_emulator: EmulatorFactory, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """Mixed 429/500/503/resets/latency/truncated/non-JSON on 20% of requests: no crash, no false
    transition, every invocation reaches its final state, and polling backs off."""
    script = _script(8)
    ids = [spec["id"] for spec in script]
    long_runners = [f"long-{n}" for n in range(4)]
    script += [{"id": i, "timeline": [{"at_s": 0, "status": "Running"}]} for i in long_runners]
    faults = [
        {"kind": "http_error", "status": 429, "retry_after_s": 1, "probability": 0.04},
        {"kind": "http_error", "status": 500, "probability": 0.03},
        {"kind": "http_error", "status": 503, "code": "ResourceThrottled", "probability": 0.03},
        {"kind": "reset", "probability": 0.03},
        {"kind": "truncated", "probability": 0.03},
        {"kind": "non_json", "probability": 0.03},
        {"kind": "latency", "latency_ms": 300, "probability": 0.03},
        {"kind": "http_error", "status": 503, "from_s": 100, "until_s": 104},  # an outage window
    ]
    emu = await start_emulator(invocations=script, faults=faults, seed=11)
    port_probe = Receiver()
    await port_probe.start()
    http_port = port_probe.port
    await port_probe.stop()
    config = write_config(
        tmp_path,
        emu.url,
        ids + long_runners,
        poll={"interval_s": 0.1, "backoff_base_s": 0.2, "backoff_cap_s": 2},
    )
    document = json.loads(config.read_text())
    document["http"] = {"listen": f"127.0.0.1:{http_port}"}
    config.write_text(json.dumps(document))
    _, progress = expected_run(emu, ids, range(5))
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    for t in range(5):
        emu.clock.advance(t - emu.clock.elapsed_s())
        await asyncio.sleep(1.5)
    await wait_until(
        lambda: (
            {k: v for k, v in committed(tmp_path / "state.db").items() if k in ids} == progress[-1]
        ),
        "final states",
        60,
    )

    # A window where every request fails: the long runners' request rate must drop (backoff).
    before = emu.stats.get("requests", 0)
    await asyncio.sleep(2)
    healthy = emu.stats.get("requests", 0) - before
    emu.clock.advance(100 - emu.clock.elapsed_s())
    await asyncio.sleep(1)  # the first failures, then backoff
    before = emu.stats.get("requests", 0)
    await asyncio.sleep(2)
    during = emu.stats.get("requests", 0) - before
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{http_port}/metrics") as response,
    ):
        metrics = await response.text()
    assert await stop(process) == 0

    invented = _inconsistent(transitions_in(read_log([log])))
    stats = emu.stats
    injected = sum(v for k, v in stats.items() if k.startswith("fault_"))
    polls = {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "fc_watcher_polls"
        for s in f.samples
        if s.name.endswith("_total")
    }
    report(
        f"requests={stats['requests']} faults injected={injected} polls={polls} "
        f"requests in 2 s: healthy={healthy}, during a total outage={during}"
    )
    assert injected > 20
    assert not invented, f"false transitions: {invented}"
    assert polls.get("failed", 0) > 10
    assert during < healthy / 2  # backed off instead of hammering
    assert "Traceback" not in log.read_text()
