"""Exit codes of the ``fc-watcher`` command and the error that means "the user got it wrong".

This module only names the codes and the exception so that ``watcher.cli`` and
``watcher.cli_devtools`` share them without importing each other; it must not map
exceptions to codes or print anything (that stays in ``watcher.cli.main``).
"""

from __future__ import annotations

# The daemon's forced exit (a second SIGINT) and the CLI's Ctrl-C share one code.
from watcher.daemon.signals import EXIT_INTERRUPTED

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd's RestartPreventExitStatus uses it


class UsageError(Exception):
    """A command-line mistake; the message is the whole explanation."""
