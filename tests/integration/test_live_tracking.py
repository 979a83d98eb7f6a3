"""``fc-watcher track`` and ``untrack`` beside a running daemon (subprocesses, the emulator, a
webhook receiver): a registered id is polled and routed by its labels, an untracked one is let
go, both survive a restart without a second first sighting, ``once`` polls them, and bad input
writes nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory, Receiver
from tests.integration.daemon import (
    committed,
    read_log,
    route_all_to_webhook,
    run_cli,
    run_to_end,
    stop,
    transitions_in,
    wait_until,
    write_config,
)
from watcher.cli import EXIT_OK, EXIT_USAGE, main
from watcher.store.sqlite import SqliteStore

RUNNING = [{"at_s": 0, "status": "Running"}]
FAILS_AT_1 = [{"at_s": 0, "status": "Running"}, {"at_s": 1, "status": "Failed", "error": "boom"}]
FN = ["--service", "demo-service", "--function", "demo-function", "--qualifier", "LATEST"]
NAME = "demo-service/demo-function/LATEST"


def _scenario(**timelines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": name, "timeline": steps} for name, steps in timelines.items()]


def _route_media_to_webhook(config: Path, url: str) -> None:
    """Only transitions labelled team=media reach the webhook: the live ids' labels count."""
    route_all_to_webhook(config, url)
    document = json.loads(config.read_text())
    document["routes"] = [{"match": {"labels": {"team": "media"}}, "sinks": ["hook"]}]
    config.write_text(json.dumps(document))


async def _cli(command: str, config: Path, *args: str, out: Path) -> str:
    """Run ``fc-watcher command -c config args`` beside the daemon; return what it printed."""
    before = out.read_text() if out.exists() else ""
    code, err = await run_to_end(command, "-c", str(config), *args, stdout=out)
    assert code == EXIT_OK, err
    return out.read_text()[len(before) :].strip()


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    return [entry for entry in read_log([log]) if entry.get("event") == name]


def _delivered(receiver: Receiver, invocation_id: str) -> list[str]:
    """The statuses the webhook heard ``invocation_id`` change to."""
    return [
        body["data"]["status"]
        for body in receiver.json_bodies()
        if body["data"]["invocationId"] == invocation_id
        and body["type"] == "invocation.status_changed"
    ]


async def test_track_and_untrack_beside_a_running_daemon(
    start_emulator: EmulatorFactory, receiver: Receiver, tmp_path: Path
) -> None:
    """A tracked id is polled by the running daemon and routed by its label; once untracked it
    is polled no more (its failure is never reported), while the config's id goes on."""
    emu = await start_emulator(invocations=_scenario(**{"cfg-1": RUNNING, "live-1": FAILS_AT_1}))
    config = write_config(tmp_path, emu.url, ["cfg-1"])
    _route_media_to_webhook(config, receiver.url)
    log, out = tmp_path / "run.log", tmp_path / "cli.out"
    process = await run_cli("run", "-c", str(config), stdout=log)
    try:
        await wait_until(lambda: "cfg-1" in committed(tmp_path / "state.db"), "first poll")
        printed = await _cli("track", config, *FN, "--label", "team=media", "live-1", out=out)
        assert printed == f"tracking 1 new invocation of {NAME}"
        await wait_until(lambda: _delivered(receiver, "live-1") == ["Running"], "live-1 routed")
        assert _events(log, "live_tracked")[0]["added"] == 1
        printed = await _cli("untrack", config, *FN, "live-1", "never-1", out=out)
        assert printed == f"untracked 1 invocation of {NAME} (1 not live-tracked)"
        await wait_until(lambda: any(e["removed"] == 1 for e in _events(log, "live_tracked")), "")
        polls_of_live, polls_of_cfg = emu.stats["requests:live-1"], emu.stats["requests:cfg-1"]
        emu.clock.advance(1)  # live-1 fails now: nobody must hear of it
        await wait_until(lambda: emu.stats["requests:cfg-1"] >= polls_of_cfg + 5, "cfg polls")
    finally:
        assert await stop(process) == 0
    assert emu.stats["requests:live-1"] <= polls_of_live + 1  # at most one poll in flight
    assert _delivered(receiver, "live-1") == ["Running"]
    assert _delivered(receiver, "cfg-1") == []  # no team=media label: not routed


async def test_live_ids_survive_a_restart_without_a_second_first_sighting(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A restarted daemon polls its live ids again from the state DB, and so does an untrack
    and a track again: each time it goes on from the stored snapshot (Running -> Retrying,
    Retrying -> Running), never reporting the invocation as new a second time."""
    retrying = [
        {"at_s": 0, "status": "Running"},
        {"at_s": 1, "status": "Retrying", "error": "E"},
        {"at_s": 2, "status": "Running"},
    ]
    emu = await start_emulator(invocations=_scenario(**{"cfg-1": RUNNING, "live-1": retrying}))
    config = write_config(tmp_path, emu.url, ["cfg-1"])
    log, out, db = tmp_path / "run.log", tmp_path / "cli.out", tmp_path / "state.db"
    process = await run_cli("run", "-c", str(config), stdout=log)
    try:
        await wait_until(lambda: "cfg-1" in committed(db), "first poll")
        await _cli("track", config, *FN, "live-1", out=out)
        await wait_until(lambda: committed(db).get("live-1") == ("Running", 1), "live-1 seen")
    finally:
        assert await stop(process) == 0
    emu.clock.advance(1)  # Retrying while no daemon runs
    process = await run_cli("run", "-c", str(config), stdout=log)
    try:
        await wait_until(lambda: committed(db).get("live-1") == ("Retrying", 2), "restarted")
        assert _events(log, "watcher_started")[1]["live"] == 1
        await _cli("untrack", config, *FN, "live-1", out=out)
        await wait_until(lambda: any(e["removed"] for e in _events(log, "live_tracked")), "gone")
        emu.clock.advance(1)  # Running again while untracked
        assert await _cli("track", config, *FN, "live-1", out=out) == (
            f"tracking 1 new invocation of {NAME}"
        )
        await wait_until(lambda: committed(db).get("live-1") == ("Running", 3), "tracked again")
    finally:
        assert await stop(process) == 0
    changes = [
        (e.get("previous_status"), e["status"])
        for e in transitions_in(read_log([log]))
        if e["invocation_id"] == "live-1" and e["type"] == "invocation.status_changed"
    ]
    assert changes == [(None, "Running"), ("Running", "Retrying"), ("Retrying", "Running")]


async def test_once_polls_live_ids(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """``once`` polls what was registered live as well as what the config lists."""
    emu = await start_emulator(invocations=_scenario(**{"cfg-1": RUNNING, "live-2": RUNNING}))
    config = write_config(tmp_path, emu.url, ["cfg-1"])
    log, out = tmp_path / "once.log", tmp_path / "cli.out"
    assert (await run_to_end("once", "-c", str(config), stdout=log))[0] == EXIT_OK
    assert emu.stats.get("requests:live-2", 0) == 0
    await _cli("track", config, *FN, "live-2", out=out)
    assert (await run_to_end("once", "-c", str(config), stdout=log))[0] == EXIT_OK
    assert emu.stats["requests:live-2"] == 1
    assert committed(tmp_path / "state.db")["live-2"] == ("Running", 1)


def _live_rows(path: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(path)
    try:
        return list(db.execute("SELECT invocation_id, removed FROM live ORDER BY invocation_id"))
    finally:
        db.close()


async def _main(*args: str) -> int:
    """``fc-watcher args`` in a thread: the command runs its own event loop."""
    return await asyncio.to_thread(main, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--service", "s", "--function", "f", "ok-1", "bad id", "x/../y"], "'bad id'"),
        (["--function", "f", "ok-1"], "needs --service"),
        (["--api", "fc3", "--service", "s", "--function", "f", "ok-1"], "remove --service"),
        (["--service", "s", "--function", "f", "--qualifier", "a b", "ok-1"], "'a b'"),
        (["--service", "s", "--function", "f", "--label", "team", "ok-1"], "KEY=VALUE"),
    ],
    ids=["bad-id", "fc2-without-service", "fc3-with-service", "bad-qualifier", "bad-label"],
)
async def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Every id is checked before the DB is opened: one bad one, and nothing is written."""
    config = write_config(tmp_path, "http://127.0.0.1:9", ["cfg-1"])
    await (await SqliteStore.open(tmp_path / "state.db")).close()
    assert await _main("track", "-c", str(config), *args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("fc-watcher")]) == 1
    assert _live_rows(tmp_path / "state.db") == []


async def test_what_track_and_untrack_say(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command says what it did: new and already tracked, untracked and not, and ids the
    config lists (which stay tracked); FC 3.0 takes no service; no state DB is one line."""
    config = write_config(tmp_path, "http://127.0.0.1:9", ["cfg-1"])
    base = ("-c", str(config))
    assert await _main("track", *base, *FN, "a-1") == 1
    assert "does not exist yet" in capsys.readouterr().err
    await (await SqliteStore.open(tmp_path / "state.db")).close()
    assert await _main("track", *base, *FN, "a-1", "a-2") == EXIT_OK
    assert await _main("track", *base, *FN, "a-1", "a-2", "a-3", "a-3") == EXIT_OK
    assert await _main("track", *base, "--api", "fc3", "--function", "tr", "t-1") == EXIT_OK
    assert await _main("untrack", *base, *FN, "a-1", "cfg-1") == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        f"tracking 2 new invocations of {NAME}",
        f"tracking 1 new invocation of {NAME} (2 already tracked)",
        "tracking 1 new invocation of tr",
        f"untracked 1 invocation of {NAME} "
        "(1 not live-tracked; 1 still tracked: the config lists it)",
    ]
    assert _live_rows(tmp_path / "state.db") == [("a-1", 1), ("a-2", 0), ("a-3", 0), ("t-1", 0)]
