"""The command line as a user meets it: the demo, the emulator, and one-line errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_emulate_refuses_a_non_loopback_host() -> None:
    """The emulator will not listen beyond loopback, and says why in one line."""
    done = _run("emulate", "--host", "0.0.0.0", "--scenario", "config/scenario-faults.yaml")
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr
    assert "Traceback" not in done.stderr


def test_emulate_with_a_bad_scenario_is_one_line(tmp_path: Path) -> None:
    """A broken scenario file exits 78 with one line naming the file and field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("invocations: [{id: 'no/slashes'}]\n")
    done = _run("emulate", "--scenario", str(bad))
    assert done.returncode == 78
    assert str(bad) in done.stderr
    assert "invocations.0.id" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_emulate_serves_and_stops_on_sigterm() -> None:
    """`fc-watcher emulate` serves on the given port and exits 0 on SIGTERM."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher",
            "--log-format",
            "json",
            "emulate",
            "--port",
            str(port),
            "--scenario",
            "config/scenario-faults.yaml",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("emulator did not start listening")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert '"event": "emulator_listening"' in out
    assert f"127.0.0.1:{port}" in out


def test_emulate_on_a_busy_port_is_one_line() -> None:
    """A port in use is reported in one line that names it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run("emulate", "--port", str(port), "--scenario", "config/scenario-faults.yaml")
    assert done.returncode != 0
    assert str(port) in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_shows_every_outcome_and_exits_0() -> None:
    """`fc-watcher demo` runs the emulator, the watcher and a verifying webhook receiver, shows
    success, failure after retries, stuck, expired, not found and a batch found by discovery,
    and ends by itself with 0."""
    done = _run("--log-format", "json", "demo", timeout_s=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    out = done.stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    kinds = {(e.get("type"), e.get("status")) for e in events if e.get("event") == "transition"}
    assert ("invocation.status_changed", "Succeeded") in kinds
    assert ("invocation.status_changed", "Failed") in kinds
    assert ("invocation.status_changed", "Expired") in kinds
    assert ("invocation.stuck", "Running") in kinds
    assert any(kind == "invocation.not_found" for kind, _ in kinds)
    assert "webhook deliveries verified: 8, rejected: 0" in out  # 3 for the discovered batch
    discovered = [line for line in out.splitlines() if "found by discovery" in line]
    assert len(discovered) == 3  # the batch no config names
    assert "demo: every outcome seen and delivered" in out
    assert "Traceback" not in done.stderr
