"""Helpers for end-to-end tests: write a config for an emulator, run the CLI, read its log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.conftest import RunningEmulator, emulator_fc
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.devtools.emulator.scenario import state_at
from watcher.fc.models import parse_invocation

ROOT = Path(__file__).parents[2]


def write_config(
    tmp_path: Path, url: str, ids: Iterable[str], *, poll: dict[str, Any] | None = None
) -> Path:
    """A watcher config for the emulator at ``url`` tracking ``ids`` of the default function."""
    settings = {"interval_s": 0.1, "max_interval_s": 0.2, "jitter": 0.1, "backoff_base_s": 0.05}
    settings.update(poll or {})
    config = {
        "fc": emulator_fc(url),
        "state": {"path": str(tmp_path / "state.db")},
        "poll": settings,
        "watch": [
            {
                "service": "demo-service",
                "function": "demo-function",
                "qualifier": "LATEST",
                "invocations": list(ids),
            }
        ],
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def route_all_to_webhook(config: Path, url: str) -> None:
    """Make the config at ``config`` send every transition to one fast-retrying webhook."""
    document = json.loads(config.read_text())
    document["sinks"] = [
        {
            "name": "hook",
            "type": "webhook",
            "url": url,
            "backoff_base_s": 0.05,
            "backoff_cap_s": 0.5,
        }
    ]
    document["routes"] = [{"sinks": ["hook"]}]
    config.write_text(json.dumps(document))


async def run_cli(
    *args: str, stdout: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start ``fc-watcher args`` with JSON logs appended to ``stdout``."""
    with stdout.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher",
            "--log-format",
            "json",
            *args,
            stdout=out,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


async def run_to_end(*args: str, stdout: Path, timeout_s: float = 60) -> tuple[int, str]:
    """Run ``fc-watcher args`` to its end; return (exit code, stderr). JSON logs go to stdout.

    It runs in a worker thread with ``subprocess.run``, so the emulator on this event loop keeps
    serving, and the exit code comes from the child itself rather than an asyncio child watcher.
    """

    def call() -> subprocess.CompletedProcess[str]:
        with stdout.open("a") as out:
            return subprocess.run(
                [sys.executable, "-m", "watcher", "--log-format", "json", *args],
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                timeout=timeout_s,
                check=False,
            )

    done = await asyncio.to_thread(call)
    return done.returncode, done.stderr


async def stop(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    """Signal the process and wait for it."""
    if process.returncode is None:
        process.send_signal(sig)
    await asyncio.wait_for(process.wait(), timeout=30)
    return int(process.returncode or 0)


def read_log(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every JSON log line in ``paths``; a line cut short by SIGKILL is skipped."""
    entries = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def transitions_in(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry.get("event") == "transition"]


def fact(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What a logged transition says, without when it was observed."""
    return (
        entry["invocation_id"],
        entry["type"],
        entry.get("previous_status"),
        entry.get("status"),
        entry.get("event_id"),
        entry.get("event_status"),
    )


Progress = dict[str, tuple[str | None, int]]


def expected_run(
    emu: RunningEmulator, ids: Iterable[str], times: Iterable[float]
) -> tuple[dict[str, tuple[Any, ...]], list[Progress]]:
    """What a watcher must emit when it sees each invocation at each of ``times``, by diffing
    the emulator's own bodies: the facts keyed by transition id, and per time the committed
    (status, event high-water) each invocation must reach."""
    app = emu.emulator.app
    specs = {spec.id: spec for spec in app.scenario.invocations}
    facts: dict[str, tuple[Any, ...]] = {}
    snapshots: dict[str, Any] = {}
    progress: list[Progress] = []
    for t in times:
        reached: Progress = {}
        for invocation_id in ids:
            ref = InvocationRef(
                FunctionRef(Api.FC2, "demo-function", "demo-service", "LATEST"), invocation_id
            )
            body = state_at(
                specs[invocation_id], t, epoch_ms=app.epoch_ms, account_id="1", region="r"
            )
            if body is None:
                continue
            parsed = parse_invocation(json.dumps(body).encode())
            result = decide.diff(snapshots.get(invocation_id), parsed, ref=ref, observed_ms=0)
            snapshots[invocation_id] = result.snapshot
            reached[invocation_id] = (result.snapshot.status, result.snapshot.event_high_water)
            for transition in result.transitions:
                event = transition.event
                facts[transition.id] = (
                    invocation_id,
                    transition.type.value,
                    transition.previous_status,
                    transition.status,
                    event.event_id if event else None,
                    event.status if event else None,
                )
        progress.append(reached)
    return facts, progress


def committed(db_path: Path) -> Progress:
    """(status, event high-water) per invocation id, as committed in the state DB."""
    if not db_path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
        try:
            rows = db.execute("SELECT invocation_id, status, event_high_water FROM invocations")
            return {row[0]: (row[1], row[2]) for row in rows}
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def committed_is(db_path: Path, progress: Progress) -> Callable[[], bool]:
    """A ``wait_until`` predicate: the state DB has committed exactly ``progress``."""
    return lambda: committed(db_path) == progress


def pending_outbox(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])
    finally:
        db.close()


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_for_polls(
    emu: RunningEmulator, ids: Iterable[str], count: int, timeout_s: float = 20
) -> None:
    """Wait until each of ``ids`` got ``count`` more requests at the emulator."""
    stats = emu.emulator.app.stats
    targets = {i: stats[f"requests:{i}"] + count for i in ids}
    deadline = time.monotonic() + timeout_s
    while any(stats[f"requests:{i}"] < n for i, n in targets.items()):
        if time.monotonic() > deadline:
            missing = [i for i, n in targets.items() if stats[f"requests:{i}"] < n]
            raise AssertionError(f"no polls for {missing} within {timeout_s} s")
        await asyncio.sleep(0.02)
