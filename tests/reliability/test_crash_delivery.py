"""SIGKILL the daemon 20+ times during a scripted 300-transition run; every transition still
reaches the webhook receiver, and no webhook-id ever stands for two different transitions.

Run twice: with the ids listed in the config, and with a ``discover`` entry instead, while
invocations keep arriving (a third of them appear one second later, a third two seconds later),
so discovery's watermark and first sightings are killed mid-way too."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory, Receiver
from tests.integration.daemon import (
    committed_is,
    expected_run,
    pending_outbox,
    read_log,
    route_all_to_webhook,
    run_cli,
    stop,
    wait_until,
    write_config,
)

STEPS = ["Enqueued", "Running", "Retrying", "Running", "Succeeded"]


def _fact(data: dict[str, Any]) -> tuple[Any, ...]:
    event = data.get("event") or {}
    return (
        data["invocationId"],
        data["type"],
        data["previousStatus"],
        data["status"],
        event.get("eventId"),
    )


@pytest.mark.parametrize("found_by", ["listed", "discovered"])
async def test_sigkill_during_a_300_transition_run(
    found_by: str,
    start_emulator: EmulatorFactory,
    receiver: Receiver,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    """Union of deliveries equals the expected set; re-deliveries are counted, never invented."""
    rng = random.Random(7)
    arrives_s = (lambda n: n % 3) if found_by == "discovered" else (lambda n: 0)
    script: list[dict[str, Any]] = [
        {
            "id": f"job-{n:02d}",
            "appears_at_s": arrives_s(n),
            "timeline": [
                {
                    "at_s": t + arrives_s(n),
                    "status": "Failed" if (n % 3 == 0 and t == 4) else status,
                }
                for t, status in enumerate(STEPS)
            ],
        }
        for n in range(30)
    ]
    ids = [spec["id"] for spec in script]
    times = list(range(len(STEPS) + max(arrives_s(n) for n in range(30))))
    emu = await start_emulator(invocations=script)
    poll = {"interval_s": 0.05, "max_interval_s": 0.1}
    config = write_config(tmp_path, emu.url, ids, poll=poll)
    if found_by == "discovered":
        document = json.loads(config.read_text())
        del document["watch"][0]["invocations"]
        document["watch"][0]["discover"] = {"prefix": "job-"}
        config.write_text(json.dumps(document))
    route_all_to_webhook(config, receiver.url + "/hook")
    facts, progress = expected_run(emu, ids, times)
    assert len(facts) == 300

    logs: list[Path] = []

    async def start() -> asyncio.subprocess.Process:
        logs.append(tmp_path / f"run-{len(logs)}.log")
        return await run_cli("run", "-c", str(config), stdout=logs[-1])

    kills = 0
    process = await start()
    for t, reached in zip(times, progress, strict=True):
        emu.clock.advance(t - emu.clock.elapsed_s())
        for _ in range(4 if len(times) <= 5 else 3):
            # Kill while it works: after start-up, at a random moment of polling or delivery.
            await wait_until(
                lambda: any(e["event"] == "watcher_started" for e in read_log(logs[-1:])), "start"
            )
            await asyncio.sleep(rng.uniform(0, 0.12))
            await stop(process, signal.SIGKILL)
            kills += 1
            process = await start()
        await wait_until(committed_is(tmp_path / "state.db", reached), f"state at t={t}", 60)
    await wait_until(lambda: pending_outbox(tmp_path / "state.db") == 0, "outbox drained", 60)
    await wait_until(
        lambda: any(e["event"] == "watcher_started" for e in read_log(logs[-1:])), "last start"
    )
    assert await stop(process) == 0

    by_id: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    deliveries = 0
    for _, headers, body in receiver.requests:
        data = json.loads(body)["data"]
        assert headers["webhook-id"] == data["id"]
        by_id[data["id"]].add(_fact(data))
        deliveries += 1
    lost = set(facts) - set(by_id)
    invented = set(by_id) - set(facts)
    redelivered = deliveries - len(by_id)
    report(
        f"kills={kills} expected={len(facts)} delivered_ids={len(by_id)} lost={len(lost)} "
        f"invented={len(invented)} same-id re-deliveries={redelivered}"
    )
    assert kills >= 20
    assert not lost
    assert not invented
    assert all(len(versions) == 1 for versions in by_id.values()), (
        "a webhook-id stood for two facts"
    )
    assert {tid: next(iter(v))[:4] for tid, v in by_id.items()} == {
        tid: f[:4] for tid, f in facts.items()
    }
