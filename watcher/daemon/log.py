"""structlog configuration, and nothing else.

On a terminal people read the console renderer; anywhere else (systemd, journald, a pipe) every
event is one JSON line for machines. Events are stable snake_case names with bound context.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO

import structlog

from watcher.core.text import cap_log_fields

LogFormat = Literal["auto", "json", "console"]


class PipeSafeStream:
    """A log stream that stops writing, rather than raising, once its reader is gone.

    ``fc-watcher run | head -1`` closes the pipe; a BrokenPipeError from a log line must never
    stop the daemon, and above all not its SIGTERM handler, which logs before it stops.
    Once the reader is gone, the file descriptor is pointed at /dev/null, so the interpreter's
    own flush at exit cannot fail either.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def isatty(self) -> bool:
        return self._stream.isatty()

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self) -> None:
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass  # not a real file (a test's StringIO): nothing will flush it at exit


def configure_logging(
    *, level: str = "info", log_format: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog once, at start-up, for the whole process."""
    out = PipeSafeStream(stream or sys.stdout)
    use_console = log_format == "console" or (log_format == "auto" and out.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # A traceback as text in one field, for the rare event that carries one (a bug);
            # never local variables, which could hold a secret. The console renders its own.
            *([] if use_console else [structlog.processors.format_exc_info]),
            # A 1 MB eventDetail must not become a 1 MB line: journald splits at 48 KiB.
            cap_log_fields,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # PrintLogger needs only write/flush, which PipeSafeStream has; it is no TextIO.
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
