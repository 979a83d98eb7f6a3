"""The state DB's health, with real daemons, real files and a real emulator on loopback.

A corrupt file is refused before READY. During a run, a read-only file (``chattr +i``: the
one way to refuse writes to root through a file already open, which a chmod or a read-only
remount cannot) and a full disk (a 4 MiB tmpfs, filled) turn /readyz to 503 with the reason,
the gauge to 0 and the STATUS line to "state DB failing", in a few rate-limited log lines;
once the cause is gone, readiness comes back and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import random
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import programs
from tests.conftest import EmulatorFactory
from tests.integration.daemon import (
    committed,
    committed_is,
    expected_run,
    pending_outbox,
    read_log,
    run_cli,
    run_to_end,
    stop,
    transitions_in,
    wait_until,
    write_config,
)
from tests.integration.test_service import NotifySocket

IDS = [f"job-{n}" for n in range(6)]
TIMELINE = [(0, "Enqueued"), (10, "Running"), (20, "Failed")]
SCRIPT = [{"id": i, "timeline": [{"at_s": t, "status": s} for t, s in TIMELINE]} for i in IDS]
ERRORS = ("state_write_failed", "state_commit_failed", "outbox_state_error")


def refused(what: str, how: str) -> None:
    """Skip the calling test, and say so in red in the run's summary (as a missing program)."""
    programs._MISSING[what] = how
    pytest.skip(f"{what} is refused here; {how}")


class Immutable:
    """``chattr +i`` on files: writes fail even for root and through descriptors already open
    (the daemon's), and ``access(2)`` says so; lifted by ``lift()`` or at the end, always."""

    def __init__(self, *paths: Path) -> None:
        self._chattr = programs.find_program("chattr", package="e2fsprogs")
        self._paths = [str(path) for path in paths]
        self.on = False

    def __enter__(self) -> Immutable:
        done = subprocess.run([self._chattr, "+i", *self._paths], capture_output=True, text=True)
        self.on = True
        if done.returncode != 0:
            self.lift()
            refused("chattr +i", f"its filesystem or user cannot ({done.stderr.strip()})")
        return self

    def lift(self) -> None:
        if self.on:
            subprocess.run([self._chattr, "-i", *self._paths], capture_output=True, check=False)
            self.on = False

    def __exit__(self, *_: object) -> None:
        self.lift()


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (tests run as root); unmounted after.

    4 MiB, not 512 KiB: the WAL grows by some 40 KiB a write until its checkpoint at 1000
    pages, so 512 KiB fills by itself within the first sightings; the test fills the rest
    itself, at the moment it chooses, and the WAL (never checkpointed yet) must grow."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        refused("mount -t tmpfs", f"run the tests as root ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> int:
    """Write a filler file until the filesystem says ENOSPC; the bytes written."""
    written = 0
    with (disk / "filler").open("wb", buffering=0) as out:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    written += out.write(b"\0" * size) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


class Daemon:
    """``fc-watcher run`` with /readyz and /metrics on loopback and a notify socket."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, notify: NotifySocket):
        self.process = process
        self.port = port
        self.notify = notify
        self.session = aiohttp.ClientSession()

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with self.session.get(f"http://127.0.0.1:{self.port}{path}") as response:
                return response.status, await response.text()
        except aiohttp.ClientError as exc:
            return 0, str(exc)

    async def metrics(self) -> dict[tuple[str, str], float]:
        """Samples by (name, kind label or "")."""
        _, text = await self.get("/metrics")
        return {
            (sample.name, sample.labels.get("kind", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in self.notify.drain() if "STATUS" in m]

    def status_says(self, words: str) -> Callable[[], bool]:
        return lambda: any(words in status for status in self.statuses())


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, url: str, state: Path) -> AsyncIterator[Daemon]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = write_config(tmp_path, url, IDS)
    document = json.loads(config.read_text())
    document["state"] = {"path": str(state)}
    document["http"] = {"listen": f"127.0.0.1:{port}"}
    config.write_text(json.dumps(document))
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run.log", env=env)
    running = Daemon(process, port, notify)
    drainer = asyncio.create_task(_drain(notify))  # the socket holds only a few datagrams
    try:
        yield running
    finally:
        drainer.cancel()
        await running.session.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
        notify.close()


async def _drain(notify: NotifySocket) -> None:
    while True:
        notify.drain()
        await asyncio.sleep(0.02)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def readyz_is(running: Daemon, status: int, *words: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        code, text = await running.get("/readyz")
        return code == status and all(word in text for word in words)

    return check


def delivered(log: Path) -> list[str]:
    return [entry["transition_id"] for entry in transitions_in(read_log([log]))]


def errors(log: Path) -> list[dict[str, Any]]:
    return [entry for entry in read_log([log]) if entry.get("event") in ERRORS]


async def test_a_corrupt_state_db_is_refused_before_ready(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Pages of a real state DB overwritten with garbage: ``run`` exits 1 with one line that
    says what, where and to move it aside, no traceback, no READY; the file is not touched."""
    ids = [f"job-{n:02d}" for n in range(40)]
    emu = await start_emulator(
        invocations=[{"id": i, "timeline": [{"at_s": 0, "status": "Failed"}]} for i in ids]
    )
    config = write_config(tmp_path, emu.url, ids)
    log = tmp_path / "run.log"
    assert (await run_to_end("once", "-c", str(config), stdout=log))[0] == 0
    db = tmp_path / "state.db"
    reader = sqlite3.connect(db)
    page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
    pages = [
        row[0]
        for row in reader.execute("SELECT pageno FROM dbstat WHERE name = ?", ["transitions"])
    ]
    reader.close()
    assert len(pages) >= 2 and not db.with_name("state.db-wal").exists()
    rng = random.Random(7)
    with db.open("r+b") as file:
        for page in pages:  # the transition log: nothing before READY reads it
            file.seek((page - 1) * page_size)
            file.write(rng.randbytes(page_size))
    corrupt = db.read_bytes()

    notify = NotifySocket(str(tmp_path / "notify.sock"))
    process = await run_cli(
        "run", "-c", str(config), stdout=log, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    )
    exited = asyncio.ensure_future(process.wait())
    try:
        await wait_until(
            lambda: exited.done() or any(m.get("READY") for m in notify.drain()), "exit or READY"
        )
    finally:
        if not exited.done():
            process.kill()
        await exited
        notify.close()
    assert process.stderr is not None
    err = (await process.stderr.read()).decode()
    assert [m for m in notify.messages if m.get("READY")] == []
    assert process.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert f"state DB {db} is not a usable SQLite database: corrupt" in err
    assert "move it aside" in err
    assert db.read_bytes() == corrupt


async def test_a_read_only_state_db_turns_readiness_off_until_writes_work(
    start_emulator: EmulatorFactory, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """The state DB and its WAL made immutable during a run: /readyz 503 saying read-only, the
    gauge 0, failed writes counted; lifted: 200 again, the change committed, nothing lost."""
    emu = await start_emulator(invocations=SCRIPT)
    facts, progress = expected_run(emu, IDS, [t for t, _ in TIMELINE])
    db, log = tmp_path / "state.db", tmp_path / "run.log"
    async with daemon(tmp_path, emu.url, db) as running:
        await eventually(readyz_is(running, 200), "ready")
        await wait_until(committed_is(db, progress[0]), "first sightings committed")
        await wait_until(lambda: pending_outbox(db) == 0, "first sightings delivered")
        with Immutable(db, db.with_name("state.db-wal")) as frozen:
            emu.clock.advance(10)
            await eventually(readyz_is(running, 503, "state DB failing", "read-only"), "503")
            metrics = await running.metrics()
            during = committed(db)
            frozen.lift()
        await eventually(readyz_is(running, 200), "ready again")
        await wait_until(committed_is(db, progress[1]), "the change committed after")
        healthy_after = (await running.metrics())[("fc_watcher_state_db_healthy", "")]
        emu.clock.advance(10)
        await wait_until(committed_is(db, progress[2]), "the last change committed")
        await wait_until(lambda: pending_outbox(db) == 0, "everything delivered")
        assert await stop(running.process) == 0
    assert metrics[("fc_watcher_state_db_healthy", "")] == 0
    failed = metrics[("fc_watcher_state_db_failed_writes_total", "read_only")]
    assert failed >= 1
    assert during == progress[0]
    assert healthy_after == 1
    lines = [e for e in errors(log) if e["event"] == "state_write_failed"]
    assert lines and {e["kind"] for e in lines} == {"read_only"}
    assert [e["event"] for e in read_log([log]) if e["event"] == "state_write_recovered"]
    sent = delivered(log)
    assert set(sent) == set(facts)  # nothing lost
    report(
        f"read-only: {failed:g} failed writes, {len(lines)} state_write_failed lines, "
        f"{len(sent) - len(set(sent))} delivered twice"
    )


async def test_a_full_disk_says_so_in_few_lines_and_loses_nothing(
    start_emulator: EmulatorFactory, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """The state DB on a 4 MiB tmpfs, filled during a run: "disk full" in the log, the STATUS
    line and /readyz (503), one ``state_write_failed`` line per 10 s however many writes fail;
    space freed: ready again, every transition committed and delivered."""
    emu = await start_emulator(invocations=SCRIPT)
    facts, progress = expected_run(emu, IDS, [t for t, _ in TIMELINE])
    log = tmp_path / "run.log"
    with small_tmpfs(tmp_path / "disk") as disk:
        db = disk / "state.db"
        async with daemon(tmp_path, emu.url, db) as running:
            await eventually(readyz_is(running, 200), "ready")
            await wait_until(committed_is(db, progress[0]), "first sightings committed")
            await wait_until(lambda: pending_outbox(db) == 0, "first sightings delivered")
            filled = fill(disk)
            full_at = time.monotonic()
            emu.clock.advance(10)
            await eventually(readyz_is(running, 503, "state DB failing", "disk full"), "503")
            await wait_until(running.status_says("state DB failing: disk full"), "STATUS")
            await eventually(
                lambda: _metric_at_least(running, "disk_full", 500), "500 failed writes"
            )
            metrics = await running.metrics()
            full_s = time.monotonic() - full_at
            lines = [e for e in errors(log) if e["event"] == "state_write_failed"]
            others = Counter(e["event"] for e in errors(log) if e["event"] != "state_write_failed")
            statuses = running.statuses()
            during = committed(db)
            (disk / "filler").unlink()
            await eventually(readyz_is(running, 200), "ready again")
            await wait_until(committed_is(db, progress[1]), "the change committed after")
            emu.clock.advance(10)
            await wait_until(committed_is(db, progress[2]), "the last change committed")
            await wait_until(lambda: pending_outbox(db) == 0, "everything delivered")
            assert await stop(running.process) == 0
    failed = metrics[("fc_watcher_state_db_failed_writes_total", "disk_full")]
    sent = delivered(log)
    report(
        f"disk full ({filled} filler bytes) for {full_s:.1f} s: {failed:g} failed writes, "
        f"{len(lines)} state_write_failed lines (held back: {sum(e['held_back'] for e in lines)})"
        f"; other error lines {dict(others)} (not rate-limited: not the store's); "
        f"{len(sent)} delivered, {len(sent) - len(set(sent))} twice"
    )
    assert metrics[("fc_watcher_state_db_healthy", "")] == 0
    assert any(s.startswith("state DB failing: disk full") for s in statuses), statuses[-3:]
    assert lines and all("disk full" in e["error"] for e in lines)
    assert "cannot rollback" not in log.read_text()
    assert len(lines) <= 1 + full_s // 10  # one line per kind per 10 s, whatever the flood
    assert during == progress[0]
    assert set(sent) == set(facts)  # nothing lost


async def _metric_at_least(running: Daemon, kind: str, count: float) -> bool:
    metrics = await running.metrics()
    return metrics.get(("fc_watcher_state_db_failed_writes_total", kind), 0) >= count
