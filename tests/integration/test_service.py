"""The daemon as a systemd service: sd_notify on a real socket, SIGHUP reloads, /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EmulatorFactory
from tests.integration.daemon import committed, read_log, run_cli, stop, wait_until, write_config
from watcher.daemon.notify import Notifier

RUNNING = [{"at_s": 0, "status": "Running"}]


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
async def test_notifier_speaks_to_a_real_socket(tmp_path: Path, abstract: bool) -> None:
    """READY, STATUS, WATCHDOG at half of WATCHDOG_USEC, and STOPPING reach the socket."""
    address = f"@fc-watcher-test-{os.getpid()}" if abstract else str(tmp_path / "notify.sock")
    listener = NotifySocket(address)
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    assert notifier.watchdog_interval_s == 0.05
    stop = asyncio.Event()
    notifier.ready("tracking 1 invocations")
    task = asyncio.create_task(notifier.watchdog(stop, lambda: "fine"))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    notifier.stopping()
    notifier.close()
    messages = listener.drain()
    listener.close()
    assert messages[0] == {"READY": "1", "STATUS": "tracking 1 invocations"}
    pings = [m for m in messages if m.get("WATCHDOG") == "1"]
    assert 3 <= len(pings) <= 8
    assert messages[-1]["STOPPING"] == "1"


def test_notifier_is_silent_without_systemd() -> None:
    """No NOTIFY_SOCKET: every call is a no-op, and no watchdog interval."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("x")  # must not raise


def test_watchdog_for_another_pid_is_ignored() -> None:
    """WATCHDOG_PID naming another process means the watchdog is not ours."""
    notifier = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None


def _config(tmp_path: Path, url: str, ids: list[str], **extra: Any) -> Path:
    path = write_config(tmp_path, url, ids)
    document = json.loads(path.read_text())
    document.update(extra)
    path.write_text(json.dumps(document))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_daemon_notifies_systemd(start_emulator: EmulatorFactory, tmp_path: Path) -> None:
    """Under a notify socket the daemon sends READY with a status line, watchdog pings, STOPPING."""
    emu = await start_emulator(invocations=[{"id": "job-1", "timeline": RUNNING}])
    config = _config(tmp_path, emu.url, ["job-1"])
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    process = await run_cli(
        "run",
        "-c",
        str(config),
        stdout=tmp_path / "run.log",
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"},
    )
    await wait_until(
        lambda: sum(m.get("WATCHDOG") == "1" for m in listener.drain()) >= 3, "watchdog pings"
    )
    assert await stop(process) == 0
    messages = listener.drain()
    listener.close()
    ready = next(m for m in messages if m.get("READY") == "1")
    assert ready["STATUS"].startswith("tracking 1 invocations")
    assert any(m.get("STOPPING") == "1" for m in messages)


async def test_sighup_applies_a_good_config_and_keeps_a_bad_one_out(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """A good config adds and removes invocations and sinks without losing state; a bad one is
    logged and the old one keeps running."""
    emu = await start_emulator(
        invocations=[{"id": i, "timeline": RUNNING} for i in ("job-1", "job-2", "job-3")]
    )
    config = _config(tmp_path, emu.url, ["job-1", "job-2"])
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    db = tmp_path / "state.db"
    await wait_until(lambda: set(committed(db)) == {"job-1", "job-2"}, "first two tracked")

    document = json.loads(config.read_text())
    document["watch"][0]["invocations"] = ["job-2", "job-3"]
    document["sinks"] = [
        {"name": "log", "type": "log"},
        {"name": "out", "type": "file", "path": str(tmp_path / "out.jsonl")},
    ]
    config.write_text(json.dumps(document))
    process.send_signal(signal.SIGHUP)
    await wait_until(
        lambda: any(e["event"] == "config_reloaded" for e in read_log([log])), "reload"
    )
    await wait_until(lambda: "job-3" in committed(db), "job-3 tracked")
    requests_for_job_1 = emu.stats.get("requests:job-1", 0)

    config.write_text("fc: [this is not a config")
    process.send_signal(signal.SIGHUP)
    await wait_until(
        lambda: any(e["event"] == "reload_failed" for e in read_log([log])), "reload refused"
    )
    polls_before = emu.stats.get("requests:job-3", 0)
    await wait_until(lambda: emu.stats.get("requests:job-3", 0) > polls_before + 2, "still polling")
    assert await stop(process) == 0

    assert emu.stats.get("requests:job-1", 0) <= requests_for_job_1 + 1  # dropped (maybe in flight)
    assert set(committed(db)) == {"job-1", "job-2", "job-3"}  # job-1's state is kept
    failed = next(e for e in read_log([log]) if e["event"] == "reload_failed")
    assert "not valid YAML" in failed["problems"][0]


async def test_sighup_raises_the_poll_concurrency(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """Concurrency 2, then 8 after a reload: FC sees exactly as many requests at once as the
    config allows (no connection pool sized at startup holds the new value back). Each
    invocation is alone in its function, so each is polled by Get (a function with many would
    be watched by List calls instead)."""
    ids = [f"job-{n:02d}" for n in range(12)]
    emu = await start_emulator(
        invocations=[{"id": i, "function": f"fn-{i}", "timeline": RUNNING} for i in ids],
        faults=[{"kind": "latency", "latency_ms": 100}],
    )
    config = write_config(tmp_path, emu.url, ids, poll={"concurrency": 2, "max_interval_s": 0.1})
    document = json.loads(config.read_text())
    entry = document["watch"][0]
    document["watch"] = [{**entry, "function": f"fn-{i}", "invocations": [i]} for i in ids]
    config.write_text(json.dumps(document))
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    await wait_until(lambda: emu.stats.get("requests", 0) >= 24, "two rounds of polls")
    assert emu.stats["max_inflight"] == 2

    document = json.loads(config.read_text())
    document["poll"]["concurrency"] = 8
    config.write_text(json.dumps(document))
    process.send_signal(signal.SIGHUP)
    await wait_until(lambda: emu.stats["max_inflight"] == 8, "eight polls at once")
    assert await stop(process) == 0
    assert emu.stats["max_inflight"] == 8


async def test_metrics_health_and_readiness(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """/metrics parses with prometheus-client's own parser; /healthz and /readyz answer."""
    emu = await start_emulator(
        invocations=[
            {"id": "job-1", "timeline": RUNNING},
            {"id": "job-2", "timeline": [{"at_s": 0, "status": "Failed"}]},
        ]
    )
    port = _free_port()
    config = _config(tmp_path, emu.url, ["job-1", "job-2"], http={"listen": f"127.0.0.1:{port}"})
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run.log")
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> tuple[int, str]:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    return response.status, await response.text()

            async def answered() -> bool:
                try:
                    return (await get("/readyz"))[0] == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(300):
                if await answered():
                    break
                await asyncio.sleep(0.05)
            assert await get("/healthz") == (200, "ok\n")
            await wait_until(lambda: "job-2" in committed(tmp_path / "state.db"), "a poll")
            await asyncio.sleep(0.3)
            status, text = await get("/metrics")
            page_status, page = await get("/")  # the status page, on the same endpoint
    finally:
        assert await stop(process) == 0
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    polls = {
        s.labels["result"]: s.value
        for s in families["fc_watcher_polls"].samples
        if s.name.endswith("_total")
    }
    assert polls.get("changed", 0) >= 2
    by_status = {s.labels["status"]: s.value for s in families["fc_watcher_invocations"].samples}
    assert by_status == {"Running": 1, "Failed": 1}
    transitions = {
        s.labels["type"]: s.value
        for s in families["fc_watcher_transitions"].samples
        if s.name.endswith("_total")
    }
    assert transitions["invocation.status_changed"] == 2
    assert "fc_watcher_api_latency_seconds" in families
    assert "fc_watcher_scheduling_lag_seconds" in families
    deliveries = {
        (s.labels["sink"], s.labels["result"]): s.value
        for s in families["fc_watcher_deliveries"].samples
        if s.name.endswith("_total")
    }
    assert deliveries[("log", "sent")] >= 2
    assert "fc_watcher_outbox_depth" in families
    assert "fc_watcher_dead_letters" in families
    assert families["fc_watcher_ready"].samples[0].value == 1
    tracked = {s.labels["found_by"]: s.value for s in families["fc_watcher_tracked"].samples}
    assert tracked == {"listed": 2, "discovered": 0, "live": 0}
    assert page_status == 200 and "job-2" in page  # the failed one, on the overview


async def test_busy_metrics_port_is_one_line(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """http.listen on a port in use: exit 1 with one line naming it, no traceback."""
    from tests.integration.daemon import run_to_end

    emu = await start_emulator(invocations=[{"id": "job-1", "timeline": RUNNING}])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(tmp_path, emu.url, ["job-1"], http={"listen": f"127.0.0.1:{port}"})
        code, err = await run_to_end("run", "-c", str(config), stdout=tmp_path / "run.log")
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1
