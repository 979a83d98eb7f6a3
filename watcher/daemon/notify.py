"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING datagrams.

A datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace), and a
no-op when it is unset, so the same code runs under systemd, in a terminal and in tests. The
watchdog ping is sent from a task on the event loop itself: a wedged loop stops pinging and
systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

_log = structlog.get_logger("watcher.notify")


class Notifier:
    """Sends sd_notify messages; silent when not started by systemd with Type=notify."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval_s: float | None = None
        if watchdog_usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            self.watchdog_interval_s = int(watchdog_usec) / 1_000_000 / 2
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> None:
        """Send ``KEY=value`` lines, e.g. ``send(READY="1", STATUS="...")``."""
        if self._address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self._address)
        except OSError as exc:
            # systemd gone or socket full: never let supervision break the watcher itself.
            _log.warning("sd_notify_failed", error=exc.strerror or str(exc))

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def stopping(self) -> None:
        self.send(STOPPING="1", STATUS="stopping")

    def reloading(self) -> None:
        """Tell systemd a reload began; ``ready()`` ends it."""
        self.send(
            RELOADING="1",
            STATUS="reloading the config",
            MONOTONIC_USEC=str(time.monotonic_ns() // 1000),
        )

    async def watchdog(self, stop: asyncio.Event, status: Callable[[], str]) -> None:
        """Ping the watchdog (and refresh STATUS) at half of WATCHDOG_USEC until ``stop``."""
        interval = self.watchdog_interval_s
        if interval is None or not self.enabled:
            await stop.wait()
            return
        while not stop.is_set():
            self.send(WATCHDOG="1", STATUS=status())
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
