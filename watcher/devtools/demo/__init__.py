"""``fc-watcher demo``: the emulator on a bundled scenario, polled by the real client."""

from __future__ import annotations

from watcher.devtools.demo.runner import run_demo

__all__ = ["run_demo"]
