"""A bounded stop: SIGTERM against a receiver that accepts connections and never answers.

The daemon must exit 0 well inside systemd's TimeoutStopSec, leave the undelivered rows
pending (no attempt counted for a send the stop cut short), and deliver them, with the same
webhook-id, on the next start once the receiver answers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import TypeAdapter

from tests.conftest import EmulatorFactory, Receiver
from tests.integration.daemon import read_log, run_cli, stop, wait_until, write_config
from tests.integration.test_delivery import commit_steps
from watcher.config.delivery import SinkSettings
from watcher.delivery.dispatcher import Dispatcher
from watcher.delivery.sinks.registry import build_sink
from watcher.store.sqlite import SqliteStore

INVOCATIONS = 20
SCRIPT: list[dict[str, Any]] = [
    {"id": f"job-{n}", "timeline": [{"at_s": 0, "status": "Failed", "error": "E: boom"}]}
    for n in range(INVOCATIONS)
]


class SilentReceiver:
    """A loopback server that accepts every connection, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    async def stop(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()


def configure(path: Path, url: str) -> None:
    """Add a log sink and a webhook sink at ``url`` whose own timeout outlasts any stop."""
    config = json.loads(path.read_text())
    config["sinks"] = [
        {"name": "log", "type": "log"},
        # 120 s: no send can fail on its own before the stop bound cuts it short, so any
        # attempt counted afterwards would be one the stop counted.
        {"name": "hook", "type": "webhook", "url": url + "/hook", "timeout_s": 120},
    ]
    path.write_text(json.dumps(config))


def hook_rows(db_path: Path) -> list[tuple[str, str, int]]:
    """(transition id, state, attempts) of every webhook row."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
    try:
        query = "SELECT transition_id, state, attempts FROM outbox WHERE sink = 'hook'"
        return [(row[0], row[1], int(row[2])) for row in db.execute(query)]
    finally:
        db.close()


def hook_row_count(db_path: Path) -> int:
    try:
        return len(hook_rows(db_path))
    except sqlite3.Error:
        return 0


async def test_sigterm_with_a_silent_receiver_exits_in_bound_and_keeps_the_rows(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """SIGTERM while every send hangs: exit 0 within the liveness bound, rows still pending
    with no attempt counted; the next start delivers each once, with the same webhook-id."""
    emu = await start_emulator(invocations=SCRIPT)
    silent = SilentReceiver()
    await silent.start()
    config = write_config(tmp_path, emu.url, [spec["id"] for spec in SCRIPT])
    configure(config, silent.url)
    db_path = tmp_path / "state.db"
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run-1.log")
    try:
        await wait_until(lambda: hook_row_count(db_path) == INVOCATIONS, "rows for the hook")
        await wait_until(lambda: silent.accepted >= 1, "a send in flight")
        await asyncio.sleep(0.5)  # let the sink fill its concurrency
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # A liveness bound (TimeoutStopSec is 30 s), not a performance assertion.
        await asyncio.wait_for(process.wait(), timeout=40)
        took_s = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await silent.stop()
    assert process.returncode == 0, f"exit {process.returncode} after {took_s:.1f} s"
    rows = hook_rows(db_path)
    assert {state for _, state, _ in rows} == {"pending"}
    assert {attempts for _, _, attempts in rows} == {0}
    events = [entry["event"] for entry in read_log([tmp_path / "run-1.log"])]
    assert events[-1] == "watcher_stopped"

    healthy = Receiver()
    await healthy.start()
    configure(config, healthy.url)
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run-2.log")
    try:
        await wait_until(
            lambda: {state for _, state, _ in hook_rows(db_path)} == {"sent"}, "rows delivered"
        )
    finally:
        assert await stop(process) == 0
        await healthy.stop()
    delivered = [headers["webhook-id"] for _, headers, _ in healthy.requests]
    assert sorted(delivered) == sorted(tid for tid, _, _ in rows)


async def test_the_stop_bound_cuts_sends_short_and_the_drain_leaves_that_sink_alone(
    tmp_path: Path, receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """In process: sends hanging on a silent receiver are cut at the bound (their rows stay
    pending, no attempt counted), a healthy sink's rows are sent, and the final drain sends
    nothing more to the sink that was cut short."""
    silent = SilentReceiver()
    await silent.start()
    adapter: TypeAdapter[Any] = TypeAdapter(SinkSettings)
    sinks = {
        name: build_sink(
            adapter.validate_python(
                {"name": name, "type": "webhook", "url": url + "/" + name, "timeout_s": 120}
            ),
            http_session,
            None,
        )
        for name, url in (("hook", silent.url), ("good", receiver.url))
    }
    store = await SqliteStore.open(tmp_path / "state.db")
    for n in range(5):
        await commit_steps(store, f"job-{n}", ["Failed"], ["hook", "good"], 0)
    dispatcher = Dispatcher(store, sinks)
    halt = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(halt, stop_timeout_s=lambda: 0.3))
    try:
        await wait_until(lambda: silent.accepted == 5, "five sends hanging")
        started = time.monotonic()
        halt.set()
        await asyncio.wait_for(running, timeout=10)
        assert time.monotonic() - started < 3  # 0.3 s bound, 2 s grace at most
        await dispatcher.drain()
        assert silent.accepted == 5
        rows = await store.pending("hook", 10)
        assert [row.attempts for row in rows] == [0] * 5
        assert await store.pending("good", 10) == []
    finally:
        await silent.stop()
        await store.close()
