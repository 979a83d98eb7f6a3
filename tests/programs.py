"""Real programs the tests start (Alertmanager, promtool...): where to find them, and a loud
line in the run's summary for each one that is missing, so a suite never passes silently.

``.ci/run`` installs them from Debian's packages before ``make test``; on a machine without
them, their tests are skipped and the summary says which program to install.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

_MISSING: dict[str, str] = {}
"""Program name -> how to install it, for every program a test asked for and did not find."""


def find_program(name: str, *, package: str, also: tuple[str, ...] = ()) -> str:
    """The path of ``name`` (or one of ``also``), or skip the calling test, recording why."""
    for candidate in (name, *also):
        found = shutil.which(candidate) or next(
            (
                str(p)
                for p in (Path("/usr/bin") / candidate, Path("/usr/sbin") / candidate)
                if p.exists()
            ),
            None,
        )
        if found:
            return found
    _MISSING[name] = f"apt-get install {package}"
    pytest.skip(f"{name} is not installed ({_MISSING[name]})")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MISSING:
        terminalreporter.section("MISSING PROGRAMS: their tests did not run", red=True, bold=True)
        for name, install in sorted(_MISSING.items()):
            terminalreporter.write_line(f"{name}: not found; {install}", red=True, bold=True)
