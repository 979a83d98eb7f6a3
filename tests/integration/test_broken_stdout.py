"""A daemon whose stdout reader has gone (``fc-watcher run | head -1``) still stops on SIGTERM,
cleanly, and its log stream never raises."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_scenario
from tests.integration.daemon import ROOT, write_config
from watcher.daemon.log import PipeSafeStream
from watcher.devtools.bench.harness import emulator

pytestmark = pytest.mark.slow


def test_sigterm_stops_a_daemon_whose_stdout_reader_is_gone(tmp_path: Path) -> None:
    """The reader closes after the first line; SIGTERM then still ends the daemon with 0."""
    scenario = make_scenario(
        invocations=[
            {
                "id": "job-1",
                "service": "demo-service",
                "function": "demo-function",
                "qualifier": "LATEST",
                "timeline": [{"at_s": 0, "status": "Running"}],
            }
        ]
    ).model_dump(mode="json", exclude_none=True)
    with emulator(scenario) as url:
        config = write_config(tmp_path, url, ["job-1"])
        process = subprocess.Popen(
            [sys.executable, "-m", "watcher", "--log-format", "json", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None and process.stderr is not None
        while b"watcher_started" not in process.stdout.readline():
            assert process.poll() is None, "the daemon ended before it started"
        process.stdout.close()  # `| head -1`
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        finally:
            process.kill()
            stderr = process.stderr.read().decode()
            process.stderr.close()
    assert code == 0, stderr
    assert "BrokenPipeError" not in stderr


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_pipe_safe_stream_swallows_a_gone_reader_and_stays_quiet() -> None:
    """After the first broken write, writes and flushes succeed and nothing is attempted."""
    stream = PipeSafeStream(_ClosedPipe())
    assert stream.write("line\n") == 5
    assert stream.reader_gone
    stream.flush()
    assert stream.write("more\n") == 5
