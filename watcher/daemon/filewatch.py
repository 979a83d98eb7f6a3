"""Following ``invocations_file`` lists while the daemon runs: an edit applies, no SIGHUP.

``InvocationsFileWatcher`` watches the directories that hold the config's ids files (through
``watchfiles``: inotify on Linux). It watches directories, not the files: an editor's save or
an ``mv`` replaces the file with a new inode, which a watch on the old one would never report.
Once changes to the named files settle, it re-reads every file (``reread_tracked``: good lines
apply, bad lines are logged with file and line, an unreadable file keeps its previous ids) and,
when the tracked set differs, hands the whole new set to ``on_change``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from watchfiles import awatch

from watcher.config.ids_file import reread_tracked, watched_files
from watcher.config.models import LoadedConfig, Tracked

_log = structlog.get_logger("watcher.filewatch")

_CATCH_UP_MS = 1000
"""How soon after the watch starts its first re-read comes, if no change comes first."""

OnChange = Callable[[tuple[Tracked, ...]], Awaitable[None] | None]
"""Receives the config source's new full tracked set (inline ids plus every file's)."""


class _StopView(asyncio.Event):
    """What ``awatch`` polls to stop: the daemon's stop or a restart, as seen from the watch
    thread. ``awatch`` sets its event when cancelled; setting this one leaves the daemon's
    stop alone, so a cancelled watcher never stops the whole daemon."""

    def __init__(self, *events: asyncio.Event) -> None:
        super().__init__()
        self._events = events

    def is_set(self) -> bool:
        return super().is_set() or any(event.is_set() for event in self._events)


class InvocationsFileWatcher:
    """Re-reads the ids files of a config when they change and applies what they list."""

    def __init__(
        self,
        loaded: LoadedConfig,
        on_change: OnChange,
        *,
        settle_ms: int = 200,
        max_batch_ms: int = 2000,
    ) -> None:
        self._loaded = loaded
        self._current = loaded.tracked
        self._on_change = on_change
        self._settle_ms = settle_ms
        self._max_batch_ms = max_batch_ms
        self._restart = asyncio.Event()
        self.watching = asyncio.Event()
        """Set once the files are watched and were re-read since; cleared when that ends."""

    @property
    def tracked(self) -> tuple[Tracked, ...]:
        """The tracked set last applied (or loaded)."""
        return self._current

    def use_config(self, loaded: LoadedConfig) -> None:
        """After a reload applied ``loaded``: follow its files, inline ids and labels."""
        self._loaded = loaded
        self._current = loaded.tracked
        self._restart.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set (it returns within ``settle_ms`` of that)."""
        while not stop.is_set():
            self._restart.clear()
            files = watched_files(self._loaded)
            if files:
                await self._watch(files, stop)
            if not stop.is_set() and not self._restart.is_set():
                await _first(stop, self._restart)  # nothing to watch, or the watch failed

    async def _watch(self, files: tuple[Path, ...], stop: asyncio.Event) -> None:
        names, present, missing = _directories(files)
        for directory in missing:
            _log.warning("invocations_file_unwatched", directory=directory, error="not found")
        if not present:
            return
        caught_up = False
        try:
            async for changes in awatch(
                *present,
                watch_filter=lambda _change, path: _named(path, names),
                debounce=self._max_batch_ms,
                step=self._settle_ms,
                rust_timeout=_CATCH_UP_MS,
                yield_on_timeout=True,
                stop_event=_StopView(stop, self._restart),
                recursive=False,  # the files sit in the directory itself; /etc has subtrees
            ):
                if changes or not caught_up:
                    # The first answer comes once the watch is up: whatever changed since the
                    # load applies then, so nothing between the load and the watch is missed.
                    await self.apply()
                    caught_up = True
                    self.watching.set()
        except OSError as exc:  # e.g. the inotify watch limit; SIGHUP still re-reads
            _log.error("invocations_file_watch_failed", directories=present, error=str(exc))
        finally:
            self.watching.clear()

    async def apply(self) -> bool:
        """Re-read the files now; hand a changed set to ``on_change``. True if it changed."""
        loaded = self._loaded
        # Off the loop: a file on a stalled network mount must not stall the polls.
        tracked, problems = await asyncio.to_thread(reread_tracked, loaded, self._current)
        if loaded is not self._loaded:
            return False  # a reload came meanwhile; the restarted watch reads again
        for problem in problems:
            if problem.line is None:
                _log.warning(
                    "invocations_file_unreadable", file=str(problem.file), error=problem.error
                )
            else:
                _log.warning(
                    "invocations_file_bad_line",
                    file=str(problem.file),
                    line=problem.line,
                    error=problem.error,
                )
        if tracked == self._current:
            return False
        before = {item.ref.key for item in self._current}
        after = {item.ref.key for item in tracked}
        try:
            result = self._on_change(tracked)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the daemon keeps running; the next change tries again
            _log.exception("invocations_file_apply_failed")
            return False
        self._current = tracked
        _log.info(
            "invocations_file_changed",
            added=len(after - before),
            removed=len(before - after),
            tracked=len(tracked),
        )
        return True


def _directories(files: tuple[Path, ...]) -> tuple[set[str], list[str], list[str]]:
    """The files' absolute names, and their directories that exist and that do not."""
    names = {os.path.abspath(path) for path in files}
    directories = sorted({os.path.dirname(name) for name in names})
    present = [directory for directory in directories if os.path.isdir(directory)]
    return names, present, [d for d in directories if d not in present]


def _named(path: str, names: set[str]) -> bool:
    return os.path.abspath(path) in names


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
