"""The state DB held locked by another process for 3 s: polls and watchdog pings go on, and the
change seen meanwhile is committed and delivered once the lock is gone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import EmulatorFactory, Receiver
from tests.integration.daemon import (
    committed,
    expected_run,
    pending_outbox,
    route_all_to_webhook,
    wait_until,
    write_config,
)
from tests.integration.test_service import NotifySocket
from watcher.config.load import load_config
from watcher.daemon.service import Watcher

LOCK_S = 3.0
WATCHDOG_USEC = 500_000
"""systemd's deadline: the watcher pings at half of it (0.25 s)."""
CHANGE_AT_S = 10
CHANGING = ["job-0", "job-1"]
STEADY = [f"job-{n}" for n in range(2, 8)]
IDS = CHANGING + STEADY

# Another process: take the write lock, say so (with its monotonic clock, which on Linux is
# the same clock as this process's), hold it for LOCK_S, say when it lets go, commit.
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", time.monotonic(), flush=True)
time.sleep(float(sys.argv[2]))
print("releasing", time.monotonic(), flush=True)
db.execute("COMMIT")
db.close()
print("released", time.monotonic(), flush=True)
"""


class PollLog(Counter[str]):
    """The emulator's stats counter, also recording when each invocation was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.times: defaultdict[str, list[float]] = defaultdict(list)

    def __setitem__(self, key: str, value: int) -> None:
        if key.startswith("requests:"):
            self.times[key.removeprefix("requests:")].append(time.monotonic())
        super().__setitem__(key, value)

    def between(self, invocation_id: str, start: float, end: float) -> int:
        return sum(1 for t in self.times[invocation_id] if start <= t < end)


class NotifyRecorder:
    """Reads the notify socket on its own thread and stamps each datagram as it arrives, so the
    times do not depend on the event loop under test."""

    def __init__(self, listener: NotifySocket) -> None:
        self._sock = listener.sock
        self._sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-recorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    def pings(self) -> list[float]:
        return [t for t, fields in self.messages if fields.get("WATCHDOG") == "1"]

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def _slices(start: float, end: float, width: float) -> list[tuple[float, float]]:
    """Consecutive [a, b) slices of ``width`` inside [start, end] (a short tail is dropped)."""
    count = int((end - start) // width)
    return [(start + n * width, start + (n + 1) * width) for n in range(count)]


def _stamp(line: bytes, word: str) -> float:
    said, _, value = line.decode().strip().partition(" ")
    assert said == word, f"locker said {line!r}, expected {word!r}"
    return float(value)


def _delivered(receiver: Receiver) -> list[str]:
    return [json.loads(body)["data"]["id"] for _, _, body in receiver.requests]


def _script() -> list[dict[str, Any]]:
    changing = [
        {
            "id": i,
            "timeline": [
                {"at_s": 0, "status": "Running"},
                {"at_s": CHANGE_AT_S, "status": "Failed" if i == "job-0" else "Succeeded"},
            ],
        }
        for i in CHANGING
    ]
    steady = [{"id": i, "timeline": [{"at_s": 0, "status": "Running"}]} for i in STEADY]
    return changing + steady


async def test_a_locked_state_db_delays_no_poll_and_no_watchdog_ping(
    start_emulator: EmulatorFactory,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    report: Callable[[str], None],
) -> None:
    """While another process holds the state DB for 3 s, every steady invocation is polled in
    every second of it and the watchdog is pinged in every period of it; the change seen
    meanwhile waits for the lock, then is committed and delivered, nothing lost."""
    emu = await start_emulator(invocations=_script())
    polls = PollLog()
    emu.emulator.app.stats = polls
    facts, progress = expected_run(emu, IDS, [0, CHANGE_AT_S])
    first_facts = set(expected_run(emu, IDS, [0])[0])
    config = write_config(
        tmp_path,
        emu.url,
        IDS,
        # A poll whose commit waits for the lock keeps its concurrency slot until the commit
        # is done; with a slot for every invocation, the blocked ones cannot starve the rest.
        poll={"interval_s": 0.2, "max_interval_s": 0.2, "jitter": 0.1, "concurrency": len(IDS)},
    )
    route_all_to_webhook(config, receiver.url + "/hook")
    db = tmp_path / "state.db"

    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    recorder = NotifyRecorder(listener)
    locker: asyncio.subprocess.Process | None = None
    stop = asyncio.Event()
    watcher = Watcher(load_config(config))
    assert watcher.notifier.watchdog_interval_s == WATCHDOG_USEC / 1e6 / 2
    with capture_logs() as logs:
        await watcher.startup()
        run = asyncio.create_task(watcher.run_until_stopped(stop))
        try:
            await wait_until(lambda: committed(db) == progress[0], "first sightings committed")
            await wait_until(
                lambda: set(_delivered(receiver)) == first_facts and pending_outbox(db) == 0,
                "first sightings delivered",
            )

            locker = await asyncio.create_subprocess_exec(
                sys.executable, "-c", LOCKER, str(db), str(LOCK_S), stdout=asyncio.subprocess.PIPE
            )
            assert locker.stdout is not None
            out = locker.stdout
            locked_at = _stamp(await out.readline(), "locked")
            emu.clock.advance(CHANGE_AT_S)
            changed_at = time.monotonic()
            # Both changed invocations are polled and see the change; their commits must wait.
            # (Not asserted here: if they are late, the checks below say what else was.)
            with contextlib.suppress(AssertionError):
                await wait_until(
                    lambda: all(polls.between(i, changed_at, float("inf")) for i in CHANGING),
                    "the changed invocations polled",
                    timeout_s=LOCK_S / 2,
                )
            await asyncio.sleep(0.5)  # room for a commit that, wrongly, did not wait
            during = committed(db)
            read_at = time.monotonic()
            releasing_at = _stamp(await out.readline(), "releasing")
            released_at = _stamp(await out.readline(), "released")
            assert await asyncio.wait_for(locker.wait(), timeout=10) == 0

            await wait_until(lambda: committed(db) == progress[1], "the change committed")
            await wait_until(
                lambda: set(_delivered(receiver)) == set(facts) and pending_outbox(db) == 0,
                "the change delivered",
            )
            stop.set()
            await asyncio.wait_for(run, timeout=30)
        finally:
            stop.set()
            if not run.done():
                run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await watcher.shutdown(drain_timeout_s=1)
            recorder.stop()
            listener.close()
            if locker is not None and locker.returncode is None:
                locker.kill()
                await locker.wait()

    seconds = _slices(locked_at, releasing_at, 1.0)
    per_second = {i: [polls.between(i, a, b) for a, b in seconds] for i in STEADY}
    periods = _slices(locked_at, releasing_at, WATCHDOG_USEC / 1e6)
    per_period = [sum(1 for t in recorder.pings() if a <= t < b) for a, b in periods]
    report(
        f"lock held {releasing_at - locked_at:.1f} s (released at +{released_at - locked_at:.1f}"
        f" s); during it, polls per steady invocation per second {list(per_second.values())}, "
        f"watchdog pings per {WATCHDOG_USEC / 1e6:g} s {per_period}"
    )

    # Polls went on in every second of the lock, for every invocation that did not change.
    assert len(seconds) == int(LOCK_S)
    assert all(count >= 2 for counts in per_second.values() for count in counts), per_second

    # The watchdog was pinged in every watchdog period of the lock.
    assert len(periods) == int(LOCK_S / (WATCHDOG_USEC / 1e6))
    assert all(count >= 1 for count in per_period), per_period

    # The changed invocations were polled during the lock, and their commits waited for it.
    assert all(polls.between(i, changed_at, releasing_at) >= 1 for i in CHANGING)
    assert read_at < releasing_at
    assert set(during) == set(IDS)
    assert {i: during[i] for i in CHANGING} == {i: progress[0][i] for i in CHANGING}
    assert {i: progress[1][i] for i in CHANGING} != {i: progress[0][i] for i in CHANGING}

    # Then nothing lost or doubled: every expected transition delivered exactly once.
    assert sorted(_delivered(receiver)) == sorted(facts)
    problems = [e for e in logs if e["event"] in ("state_commit_failed", "poll_crashed")]
    assert problems == []
