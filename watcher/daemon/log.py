"""structlog configuration, and nothing else.

On a terminal people read the console renderer; anywhere else (systemd, journald, a pipe) every
event is one JSON line for machines. Events are stable snake_case names with bound context.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    *, level: str = "info", log_format: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog once, at start-up, for the whole process."""
    out = stream or sys.stdout
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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
