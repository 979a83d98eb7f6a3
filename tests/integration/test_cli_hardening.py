"""Small things a user meets first: ``once`` says which polls failed and why, ``--log-format``
goes before or after the command, and a BOM at the start of a file is not an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.cli import _parser
from watcher.config.load import load_config
from watcher.devtools.bench.harness import emulator
from watcher.devtools.bench.scenario import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ACCOUNT_ID,
    FUNCTION,
    SERVICE,
    steady_scenario,
)

pytestmark = pytest.mark.slow


def _config(path: Path, url: str, ids: list[str]) -> Path:
    document = {
        "fc": {
            "account_id": ACCOUNT_ID,
            "region": "cn-hangzhou",
            "endpoint": url,
            "access_key_id": ACCESS_KEY_ID,
            "access_key_secret": ACCESS_KEY_SECRET,
        },
        "state": {"path": str(path.parent / "state.db")},
        "poll": {"backoff_base_s": 0.05},
        "watch": [{"service": SERVICE, "function": FUNCTION, "invocations": ids}],
    }
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_once_names_each_failed_poll_and_its_error(tmp_path: Path) -> None:
    """One of two polls gets a 500: ``once`` exits 1 and says which invocation and why."""
    scenario = steady_scenario(2)
    scenario["faults"] = [{"kind": "http_error", "status": 500, "every_nth": 2}]
    with emulator(scenario) as url:
        config = _config(tmp_path / "watcher.yaml", url, ["bench-000000", "bench-000001"])
        # A process of its own: the CLI configures logging for its whole process, which must
        # not leak into the tests that run after this one.
        done = subprocess.run(
            [sys.executable, "-m", "watcher", "--log-format", "json", "once", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    err = done.stderr
    assert done.returncode == 1
    assert "1 of 2 polls failed:" in err
    failed = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(failed) == 1
    assert "bench-00000" in failed[0]
    assert "ServerError" in failed[0]
    assert "http=500" in failed[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check", "-c", "w.yaml"], "auto"),
        (["--log-format", "json", "check", "-c", "w.yaml"], "json"),
        (["check", "-c", "w.yaml", "--log-format", "console"], "console"),
        (["--log-format", "json", "status", "-c", "w.yaml", "--log-format", "console"], "console"),
        (["demo", "--log-format", "json"], "json"),
    ],
)
def test_log_format_goes_before_or_after_the_command(argv: list[str], expected: str) -> None:
    """The option is accepted on either side of the command; after it, it wins."""
    assert _parser().parse_args(argv).log_format == expected


def test_a_bom_starts_a_config_and_an_ids_file_harmlessly(tmp_path: Path) -> None:
    """A UTF-8 BOM (Windows editors write one) is neither YAML nor part of the first id."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes("\ufeffjob-1\njob-2\n".encode())
    config = tmp_path / "watcher.yaml"
    text = (
        'fc: {account_id: "1234567890123456", region: cn-hangzhou}\n'
        f"state: {{path: {tmp_path / 'state.db'}}}\n"
        f"watch: [{{service: media, function: transcode, invocations_file: {ids}}}]\n"
    )
    config.write_bytes(("\ufeff" + text).encode())
    loaded = load_config(config)
    assert [t.ref.invocation_id for t in loaded.tracked] == ["job-1", "job-2"]
