"""The file sink: one JSON line per transition, appended, fsynced per batch.

For log shippers (Logtail for SLS, Filebeat, Vector). ``reopen()`` (on SIGHUP) closes and
reopens the path, so logrotate can move the file away. Writes run in a worker thread so the
event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from typing import IO

from watcher.config.delivery import FileSinkSettings
from watcher.delivery.sinks.base import REAL_TIME, Batching, Outgoing, Sink, SinkError, Timer


class FileSink(Sink):
    """Appends transitions to a file."""

    def __init__(self, settings: FileSinkSettings, *, timer: Timer = REAL_TIME) -> None:
        # One write at a time by default: a batch a write is one fsync for many lines.
        super().__init__(
            settings.name,
            Batching(max_batch=settings.max_batch, max_in_flight=settings.concurrency),
            rate_per_s=settings.rate_limit_per_s,
            timer=timer,
        )
        self._path = settings.path
        self._handle: IO[str] | None = None
        self._reopen = False
        # With concurrency above 1 writes run in several worker threads: appends to one handle
        # could interleave lines, and a reopen could close the handle under another write.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileSink(name={self.name!r}, path={self._path!r})"

    def reopen(self) -> None:
        """Reopen the path before the next write (logrotate moved the file)."""
        # Only flagged: a write may be running in a worker thread with the handle right now.
        self._reopen = True

    def _write(self, lines: str) -> None:
        with self._lock:
            if self._reopen and self._handle is not None:
                self._handle.close()
                self._handle = None
            self._reopen = False
            if self._handle is None:
                self._handle = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._handle.write(lines)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        lines = "".join(
            json.dumps({**item.transition.to_dict(), "severity": item.severity}, ensure_ascii=False)
            + "\n"
            for item in batch
        )
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            raise SinkError(f"cannot write {self._path}: {exc.strerror}", retryable=True) from None

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
