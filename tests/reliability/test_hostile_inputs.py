"""Hostile inputs end in one clear line and no traceback: configs, ids, API bodies, state DBs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.integration.daemon import read_log, run_cli, run_to_end, stop, write_config


async def _once(config: Path, tmp_path: Path) -> tuple[int, str, str]:
    out = tmp_path / "once.log"
    code, err = await run_to_end("once", "-c", str(config), stdout=out)
    return code, out.read_text() if out.exists() else "", err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["watch"][0].update(invocations=["../../../etc/passwd"]), "invalid name or id"),
        (lambda d: d["watch"][0].update(invocations=["a" * 500]), "invalid name or id"),
        (lambda d: d["watch"][0].update(invocations=["x\\u0000y"]), "invalid name or id"),
        (lambda d: d["watch"][0].update(function="fn/../../admin"), "watch[0].function"),
        (lambda d: d.update(fc="not a mapping"), "fc"),
        (lambda d: d["poll"].update(interval_s="fast"), "poll.interval_s"),
    ],
    ids=[
        "traversal-id",
        "huge-id",
        "nul-id",
        "traversal-function",
        "fc-not-mapping",
        "bad-interval",
    ],
)
async def test_hostile_configs_and_ids(
    start_emulator: EmulatorFactory, tmp_path: Path, mutate: object, message: str
) -> None:
    """Each is refused before any request: exit 78, lines naming the problem, no traceback."""
    emu = await start_emulator()
    config = write_config(tmp_path, emu.url, ["job-1"])
    document = json.loads(config.read_text())
    mutate(document)  # type: ignore[operator]
    config.write_text(json.dumps(document))
    code, _, err = await _once(config, tmp_path)
    assert code == 78, err
    assert message in err
    assert "Traceback" not in err
    assert emu.stats.get("requests", 0) == 0


async def test_hostile_id_in_an_ids_file(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A bad line in invocations_file is reported as file:line."""
    emu = await start_emulator()
    config = write_config(tmp_path, emu.url, ["job-1"])
    (tmp_path / "ids.txt").write_text("ok-1\n%2e%2e/secret\n")
    document = json.loads(config.read_text())
    document["watch"][0]["invocations_file"] = "ids.txt"
    config.write_text(json.dumps(document))
    code, _, err = await _once(config, tmp_path)
    assert code == 78, err
    assert "ids.txt:2" in err
    assert "Traceback" not in err


async def test_oversized_api_body(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A 9 MiB body is refused as a bad response (poll failed, exit 1), never parsed or stored."""
    emu = await start_emulator(
        invocations=[{"id": "job-1", "timeline": [{"at_s": 0, "status": "Running"}]}],
        faults=[{"kind": "oversized"}],
    )
    code, out, err = await _once(write_config(tmp_path, emu.url, ["job-1"]), tmp_path)
    assert code == 1
    assert "Traceback" not in out + err
    assert not [e for e in read_log([tmp_path / "once.log"]) if e.get("event") == "transition"]


async def test_state_db_that_is_not_a_database(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A garbage state file: one line saying what and how to fix; the file is left alone."""
    emu = await start_emulator()
    (tmp_path / "state.db").write_bytes(b"garbage" * 1000)
    code, out, err = await _once(write_config(tmp_path, emu.url, ["job-1"]), tmp_path)
    assert code == 1
    assert "not a usable SQLite database" in err
    assert "move it aside" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err
    assert (tmp_path / "state.db").read_bytes() == b"garbage" * 1000


async def test_locked_state_db(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """A state DB locked by another process when a change must be committed: the poll counts as
    failed (exit 1, repeated next time), with a clear 'locked' line; nothing half-written."""
    emu = await start_emulator(
        invocations=[
            {
                "id": "job-1",
                "timeline": [{"at_s": 0, "status": "Running"}, {"at_s": 5, "status": "Failed"}],
            }
        ]
    )
    config = write_config(tmp_path, emu.url, ["job-1"])
    code, _, _ = await _once(config, tmp_path)  # create it, job-1 Running
    assert code == 0
    emu.clock.advance(5)
    holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, out, err = await _once(config, tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1
    failures = [
        e for e in read_log([tmp_path / "once.log"]) if e.get("event") == "state_commit_failed"
    ]
    assert failures
    assert "locked" in failures[0]["error"]
    assert "Traceback" not in out + err
    code, _, _ = await _once(config, tmp_path)  # the lock gone, the change is committed
    assert code == 0
    statuses = [
        e.get("status") for e in read_log([tmp_path / "once.log"]) if e.get("event") == "transition"
    ]
    assert statuses.count("Failed") == 2  # the Failed event and the status change, once each


async def test_a_second_daemon_on_the_same_state(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Two watchers on one state DB: the second says so in one line."""
    emu = await start_emulator(
        invocations=[{"id": "job-1", "timeline": [{"at_s": 0, "status": "Running"}]}]
    )
    config = write_config(tmp_path, emu.url, ["job-1"])
    first = await run_cli("run", "-c", str(config), stdout=tmp_path / "first.log")
    try:
        for _ in range(200):
            if any(e.get("event") == "watcher_started" for e in read_log([tmp_path / "first.log"])):
                break
            await asyncio.sleep(0.05)
        code, out, err = await _once(config, tmp_path)
    finally:
        await stop(first)
    assert code == 1
    assert "in use by another fc-watcher" in err
    assert "Traceback" not in out + err
