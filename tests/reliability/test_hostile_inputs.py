"""Hostile inputs end in one clear line and no traceback: configs, ids, API bodies, state DBs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory, RunningEmulator
from tests.integration.daemon import (
    fact,
    read_log,
    run_cli,
    run_to_end,
    stop,
    transitions_in,
    write_config,
)
from watcher.core.model import Transition
from watcher.core.render import render
from watcher.core.text import MESSAGE_TEXT_BYTES, STATE_TEXT_BYTES


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
    # The store reports a failed write once per kind per interval (the poll's own line is debug).
    failures = [
        e for e in read_log([tmp_path / "once.log"]) if e.get("event") == "state_write_failed"
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


# -- bodies that used to hide an invocation's outcome ---------------------------------------------

JOURNALD_LINE_MAX = 48 * 1024


def serve_rewritten(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch, rewrite: Callable[[bytes], bytes]
) -> None:
    """Serve every Get body of the emulator through ``rewrite``: bytes a scenario cannot spell
    (invalid UTF-8, a lone surrogate escape, eventIds FC renumbered) go out over loopback."""
    catalog = emu.emulator.app.catalog
    render_body = catalog.body_bytes

    def body_bytes(entry: Any, now_s: float) -> bytes | None:
        body = render_body(entry, now_s)
        return None if body is None else rewrite(body)

    monkeypatch.setattr(catalog, "body_bytes", body_bytes)


async def _once_into(config: Path, log: Path) -> tuple[int, list[dict[str, Any]]]:
    """One ``once`` run logging into its own file: (exit code, the transitions it logged)."""
    code, err = await run_to_end("once", "-c", str(config), stdout=log)
    assert "Traceback" not in err
    return code, transitions_in(read_log([log]))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(b"\xff\xfe", "\ufffd\ufffd"), (b"\\ud800", "\ufffd")],
    ids=["invalid-utf8", "escaped-lone-surrogate"],
)
async def test_undecodable_event_detail_does_not_hide_a_failure(
    start_emulator: EmulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raw: bytes,
    shown: str,
) -> None:
    """A Failed whose eventDetail holds bytes that are not UTF-8 (or a lone surrogate escape) is
    reported, the bytes shown as U+FFFD, and stored: once refused, it stayed Running forever."""
    emu: RunningEmulator = await start_emulator(
        invocations=[
            {
                "id": "job-1",
                "timeline": [
                    {"at_s": 0, "status": "Running"},
                    {"at_s": 0, "status": "Failed", "detail": "oom HOSTILE", "error": "boom"},
                ],
            }
        ]
    )
    serve_rewritten(emu, monkeypatch, lambda body: body.replace(b"HOSTILE", raw))
    config = write_config(tmp_path, emu.url, ["job-1"])
    code, logged = await _once_into(config, tmp_path / "once.log")
    assert code == 0
    assert [fact(t) for t in logged] == [
        ("job-1", "invocation.event", None, "Failed", 1, "Running"),
        ("job-1", "invocation.event", None, "Failed", 2, "Failed"),
        ("job-1", "invocation.status_changed", None, "Failed", None, None),
    ]
    assert logged[1]["event_detail"] == "oom " + shown
    with sqlite3.connect(tmp_path / "state.db") as db:
        stored = db.execute("SELECT status, error_message FROM invocations").fetchall()
    assert stored == [("Failed", "boom")]


async def test_event_ids_renumbered_downward(
    start_emulator: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FC renumbers the events mid-run (11, 12, then 1, 2, 3, 4): the new Retrying and Failed
    events are reported, with the status, and an unchanged poll after them reports nothing."""
    emu: RunningEmulator = await start_emulator(
        invocations=[
            {
                "id": "job-1",
                "timeline": [
                    {"at_s": 0, "status": "Enqueued"},
                    {"at_s": 1, "status": "Running"},
                    {"at_s": 5, "status": "Retrying", "error": "boom"},
                    {"at_s": 8, "status": "Failed", "error": "boom"},
                ],
            }
        ]
    )

    def renumber(body: bytes) -> bytes:
        document = json.loads(body)
        if emu.clock.elapsed_s() < 5:  # the first numbering, before FC reset it
            for event in document["events"]:
                event["eventId"] += 10
        return json.dumps(document).encode()

    serve_rewritten(emu, monkeypatch, renumber)
    config = write_config(tmp_path, emu.url, ["job-1"])
    facts: list[list[tuple[Any, ...]]] = []
    polls: list[int] = []
    for step, advance_s in enumerate((2, 3, 0, 3)):
        emu.clock.advance(advance_s)
        code, logged = await _once_into(config, tmp_path / f"once-{step}.log")
        assert code == 0
        facts.append([fact(t)[1:] for t in logged])
        polls.append(emu.stats.get("requests:job-1", 0))
    assert facts == [
        [
            ("invocation.event", None, "Running", 11, "Enqueued"),
            ("invocation.event", None, "Running", 12, "Running"),
            ("invocation.status_changed", None, "Running", None, None),
        ],
        [
            ("invocation.event", None, "Retrying", 3, "Retrying"),
            ("invocation.status_changed", "Running", "Retrying", None, None),
        ],
        [],  # the same body again: nothing
        [
            ("invocation.event", None, "Failed", 4, "Failed"),
            ("invocation.status_changed", "Retrying", "Failed", None, None),
        ],
    ]
    assert polls == [1, 2, 3, 4]  # each run polled it: the unchanged body too


async def test_a_megabyte_event_detail_is_capped(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A 1 MB eventDetail: the state keeps 8 KiB of it, the log line stays far under journald's
    48 KiB line limit, and the rendered message shows a capped excerpt; each says it was cut."""
    emu: RunningEmulator = await start_emulator(
        invocations=[
            {
                "id": "job-1",
                "timeline": [{"at_s": 0, "status": "Failed", "detail": "x" * 1_048_576}],
            }
        ]
    )
    config = write_config(tmp_path, emu.url, ["job-1"])
    code, logged = await _once_into(config, tmp_path / "once.log")
    assert code == 0
    marker = f"… [truncated 1048576 -> {STATE_TEXT_BYTES} bytes]"
    assert logged[0]["event_detail"].endswith(marker)
    lines = (tmp_path / "once.log").read_bytes().splitlines()
    assert max(len(line) for line in lines) < JOURNALD_LINE_MAX // 4
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT data FROM transitions WHERE type = 'invocation.event'")
        stored = Transition.from_dict(json.loads(rows.fetchone()[0]))
    assert stored.event is not None
    assert len(stored.event.event_detail.encode()) <= STATE_TEXT_BYTES
    detail = next(line for line in render(stored).lines if line.startswith("detail: "))
    assert detail.endswith(f"… [truncated {STATE_TEXT_BYTES} -> {MESSAGE_TEXT_BYTES} bytes]")
    assert len(detail.removeprefix("detail: ").encode()) <= MESSAGE_TEXT_BYTES
