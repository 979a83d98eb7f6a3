"""Following a table of the state DB by revision: what live tracking and silences share.

Another process (``fc-watcher track``, ``silence add``) writes the state DB; the daemon looks
for what changed since the revision it last saw, every ``every_s`` and at once when asked (an
API call). A failure is logged once per spell and tried again on the next tick; a bug is logged
with its traceback and does not stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

import structlog

from watcher.store.errors import StateStoreError

_log = structlog.get_logger("watcher.service")


class Follower(ABC):
    """Applies a table's changes after revision ``_rev``; ``_apply_changes`` is the table's."""

    def __init__(self, name: str, every_s: float) -> None:
        self._name = name
        self._every_s = every_s
        self._rev = 0
        self._lock = asyncio.Lock()  # the tick and the API must not apply one change twice
        self._failing = False

    @abstractmethod
    async def _apply_changes(self) -> None:
        """Read what changed after ``self._rev``, apply it, and move ``self._rev`` on."""

    async def _refresh(self) -> None:
        async with self._lock:
            await self._apply_changes()

    async def refresh(self) -> None:
        """Apply what changed since the last look, now; a failure is logged, not raised (the
        next tick tries again, and what was applied so far stays in force)."""
        try:
            await self._refresh()
        except StateStoreError as exc:
            if not self._failing:
                _log.warning(f"{self._name}_failed", error=str(exc), retry_in_s=self._every_s)
            self._failing = True
            return
        except Exception as exc:  # a bug: keep the daemon going
            _log.error(f"{self._name}_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return
        if self._failing:
            self._failing = False
            _log.info(f"{self._name}_recovered")

    async def run(self, stop: asyncio.Event) -> None:
        """Look for changes every ``every_s`` until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._every_s)
            if not stop.is_set():
                await self.refresh()
