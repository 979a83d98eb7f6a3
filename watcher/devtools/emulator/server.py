"""Running the emulator: an ``EmulatorApp`` served on a loopback port, as an async context manager.

This module only starts and stops the server; it must not handle requests (``app`` does), and
it must never listen beyond loopback: the emulator is a test double (the CLI checks the host).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from watcher.devtools.emulator.app import EmulatorApp
from watcher.devtools.emulator.clock import Clock
from watcher.devtools.emulator.scenario import Scenario


class Emulator:
    """Runs an ``EmulatorApp`` on a loopback port; an async context manager."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.app = EmulatorApp(scenario, clock=clock, wall=wall)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL to point a client at."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        # In-flight handlers (say, an injected 30 s latency) must not hold up a stop.
        self._runner = web.AppRunner(
            self.app.build(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
