"""The systemd unit: the directives the service relies on, and its exposure rating."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "systemd" / "fc-watcher.service"


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_has_what_the_service_relies_on() -> None:
    """notify, reload by SIGHUP, restart on failure but not on a bad config, state dir, creds."""
    units = _directives()
    assert units["Type"] == ["notify"]
    assert units["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert units["Restart"] == ["on-failure"]
    assert units["RestartPreventExitStatus"] == ["78"]
    assert units["StateDirectory"] == ["fc-watcher"]
    assert units["DynamicUser"] == ["yes"]
    assert any(value.startswith("fc-access-key-secret:") for value in units["LoadCredential"])
    stop_s = int(units["TimeoutStopSec"][0].removesuffix("s"))
    assert stop_s > 10 + 5  # poll.stop_timeout_s default plus the final delivery pass
    assert "AF_INET" in units["RestrictAddressFamilies"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_exposure_is_two_or_lower() -> None:
    """systemd-analyze security --offline rates the unit 2.0 or lower."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    print(f"exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.0
