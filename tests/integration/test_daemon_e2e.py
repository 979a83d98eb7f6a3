"""`fc-watcher once` and `run` as subprocesses against the emulator: exact transition sequences,
graceful stop, and SIGKILL at random moments without losing or inventing a transition."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import EmulatorFactory
from tests.integration.daemon import (
    committed_is,
    expected_run,
    fact,
    pending_outbox,
    read_log,
    run_cli,
    run_to_end,
    stop,
    transitions_in,
    wait_until,
    write_config,
)

SCRIPT: list[dict[str, Any]] = [
    {
        "id": "ok-1",
        "timeline": [
            {"at_s": 0, "status": "Enqueued"},
            {"at_s": 1, "status": "Running"},
            {"at_s": 3, "status": "Succeeded"},
        ],
    },
    {
        "id": "fail-2",
        "timeline": [
            {"at_s": 0, "status": "Enqueued"},
            {"at_s": 1, "status": "Running"},
            {"at_s": 2, "status": "Retrying", "error": "E"},
            {"at_s": 3, "status": "Running"},
            {"at_s": 4, "status": "Retrying", "error": "E"},
            {"at_s": 5, "status": "Running"},
            {"at_s": 6, "status": "Failed", "error": "UnhandledInvocationError: boom"},
        ],
    },
    {
        "id": "odd-3",
        "timeline": [
            {"at_s": 0, "status": "Enqueued"},
            {"at_s": 2, "status": "Suspended"},
            {"at_s": 4, "status": "Running"},
            {"at_s": 5, "status": "Expired"},
        ],
    },
]
IDS = [spec["id"] for spec in SCRIPT]
TIMES = [0, 1, 2, 3, 4, 5, 6]

EXPECTED_FAIL_2 = [
    ("invocation.event", None, "Enqueued", 1, "Enqueued"),
    ("invocation.status_changed", None, "Enqueued", None, None),
    ("invocation.event", None, "Running", 2, "Running"),
    ("invocation.status_changed", "Enqueued", "Running", None, None),
    ("invocation.event", None, "Retrying", 3, "Retrying"),
    ("invocation.status_changed", "Running", "Retrying", None, None),
    ("invocation.event", None, "Running", 4, "Running"),
    ("invocation.status_changed", "Retrying", "Running", None, None),
    ("invocation.event", None, "Retrying", 5, "Retrying"),
    ("invocation.status_changed", "Running", "Retrying", None, None),
    ("invocation.event", None, "Running", 6, "Running"),
    ("invocation.status_changed", "Retrying", "Running", None, None),
    ("invocation.event", None, "Failed", 7, "Failed"),
    ("invocation.status_changed", "Running", "Failed", None, None),
]


def _sequence(entries: list[dict[str, Any]], invocation_id: str) -> list[tuple[Any, ...]]:
    return [fact(e)[1:] for e in transitions_in(entries) if e["invocation_id"] == invocation_id]


async def test_once_emits_the_exact_sequence(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """`once` after each scripted step records and logs exactly the scripted transitions."""
    emu = await start_emulator(invocations=SCRIPT)
    config = write_config(tmp_path, emu.url, IDS)
    log = tmp_path / "once.log"
    for t in TIMES:
        emu.clock.advance(t - emu.clock.elapsed_s())
        code, err = await run_to_end("once", "-c", str(config), stdout=log)
        assert code == 0, err
    entries = read_log([log])
    assert _sequence(entries, "fail-2") == EXPECTED_FAIL_2
    assert [f[2] for f in _sequence(entries, "odd-3") if f[0] == "invocation.status_changed"] == [
        "Enqueued",
        "Suspended",
        "Running",
        "Expired",
    ]
    facts, _ = expected_run(emu, IDS, TIMES)
    assert Counter(fact(e) for e in transitions_in(entries)) == Counter(facts.values())
    requests_before = emu.stats["requests"]
    assert (await run_to_end("once", "-c", str(config), stdout=log))[0] == 0
    assert emu.stats["requests"] == requests_before  # every invocation finished: nothing to poll


async def test_once_exits_1_when_a_poll_fails(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A failed poll makes `once` exit 1."""
    emu = await start_emulator(invocations=SCRIPT, faults=[{"kind": "http_error", "status": 500}])
    config = write_config(tmp_path, emu.url, IDS)
    assert (await run_to_end("once", "-c", str(config), stdout=tmp_path / "o.log"))[0] == 1


async def test_run_emits_the_exact_sequence_and_stops_gracefully(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """The daemon follows the script step by step, then exits 0 on SIGTERM."""
    emu = await start_emulator(invocations=SCRIPT)
    config = write_config(tmp_path, emu.url, IDS)
    log = tmp_path / "run.log"
    _, progress = expected_run(emu, IDS, TIMES)
    process = await run_cli("run", "-c", str(config), stdout=log)
    for t, reached in zip(TIMES, progress, strict=True):
        emu.clock.advance(t - emu.clock.elapsed_s())
        await wait_until(committed_is(tmp_path / "state.db", reached), f"state at t={t}")
    await wait_until(lambda: pending_outbox(tmp_path / "state.db") == 0, "outbox drained")
    assert await stop(process) == 0
    entries = read_log([log])
    assert _sequence(entries, "fail-2") == EXPECTED_FAIL_2
    events = [e["event"] for e in entries]
    assert "watcher_started" in events
    assert events[-1] == "watcher_stopped"


async def test_sigkill_at_random_moments_loses_and_invents_nothing(
    start_emulator: EmulatorFactory, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """Killed with SIGKILL at random moments and restarted, the daemon still emits every
    expected transition, and no transition id ever stands for two different facts."""
    rng = random.Random(20261126)
    script: list[dict[str, Any]] = [
        {
            "id": f"job-{n}",
            "timeline": [
                {"at_s": step, "status": status}
                for step, status in enumerate(
                    [
                        "Enqueued",
                        "Dequeued",
                        "Running",
                        "Retrying",
                        "Running",
                        "Retrying",
                        "Running",
                    ]
                )
            ]
            + [{"at_s": 7, "status": "Failed" if n % 2 else "Succeeded"}],
        }
        for n in range(6)
    ]
    ids = [spec["id"] for spec in script]
    times = list(range(8))
    emu = await start_emulator(invocations=script)
    config = write_config(tmp_path, emu.url, ids)
    facts, progress = expected_run(emu, ids, times)
    logs: list[Path] = []
    kills = 0

    async def start() -> Any:
        logs.append(tmp_path / f"run-{len(logs)}.log")
        return await run_cli("run", "-c", str(config), stdout=logs[-1])

    process = await start()
    for t, reached in zip(times, progress, strict=True):
        emu.clock.advance(t - emu.clock.elapsed_s())
        for _ in range(2):
            await wait_until(lambda: bool(emu.stats.get("requests")), "first request")
            await asyncio.sleep(rng.uniform(0, 0.4))
            await stop(process, signal.SIGKILL)
            kills += 1
            process = await start()
        await wait_until(committed_is(tmp_path / "state.db", reached), f"state at t={t}")
    await wait_until(lambda: pending_outbox(tmp_path / "state.db") == 0, "outbox drained")
    await wait_until(
        lambda: any(e["event"] == "watcher_started" for e in read_log(logs[-1:])),
        "the last restart to be up",
    )
    assert await stop(process) == 0

    seen: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for entry in transitions_in(read_log(logs)):
        seen[entry["transition_id"]].add(fact(entry))
    assert kills >= 16
    assert set(seen) == set(facts), "lost or invented transitions"
    assert all(len(versions) == 1 for versions in seen.values()), "an id stood for two facts"
    assert {tid: next(iter(v)) for tid, v in seen.items()} == facts
    redelivered = sum(1 for e in transitions_in(read_log(logs))) - len(seen)
    report(f"kills={kills} transitions={len(facts)} same-id re-deliveries={redelivered}")


async def test_sigterm_cancels_polls_past_the_stop_bound(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Polls still in flight after stop_timeout_s are cancelled and counted; exit is 0."""
    emu = await start_emulator(
        invocations=SCRIPT, faults=[{"kind": "latency", "latency_ms": 30_000}]
    )
    config = write_config(tmp_path, emu.url, IDS, poll={"stop_timeout_s": 0.3, "interval_s": 0.05})
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    await wait_until(lambda: emu.stats.get("max_inflight", 0) >= len(IDS), "polls in flight")
    assert await stop(process) == 0
    stopped = [e for e in read_log([log]) if e["event"] == "polls_stopped"]
    assert stopped == [stopped[0]]
    assert stopped[0]["cancelled"] == len(IDS)


async def test_second_sigint_exits_at_once(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A second Ctrl-C does not wait for the stop bound: exit 130."""
    emu = await start_emulator(
        invocations=SCRIPT, faults=[{"kind": "latency", "latency_ms": 30_000}]
    )
    config = write_config(tmp_path, emu.url, IDS, poll={"stop_timeout_s": 60})
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run.log")
    await wait_until(lambda: emu.stats.get("max_inflight", 0) >= len(IDS), "polls in flight")
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    assert await stop(process, signal.SIGINT) == 130
