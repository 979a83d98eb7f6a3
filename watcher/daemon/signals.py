"""The daemon's signal policy, in one place (the service installs it; the CLI never does).

SIGTERM and SIGINT ask for a graceful stop; a second SIGINT forces the exit at once (the state
DB is safe at any instant, so nothing is lost); SIGHUP asks for a reload. Handlers only set
events or call back: all the work happens in the service's tasks.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import structlog

_log = structlog.get_logger("watcher.service")

EXIT_INTERRUPTED = 130  # what a shell reports for a process ended by SIGINT


def install_signal_handlers(stop: asyncio.Event, *, reload: Callable[[], None]) -> None:
    """Route SIGTERM/SIGINT to ``stop`` and SIGHUP to ``reload`` on the running loop."""
    loop = asyncio.get_running_loop()

    def request_stop(signum: int) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            _log.warning("forced_exit", signal="SIGINT")
            os._exit(EXIT_INTERRUPTED)
        _log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, reload)
