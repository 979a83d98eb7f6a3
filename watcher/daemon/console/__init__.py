"""The live status page on ``http.listen``: overview, invocations, outbox, silences.

``add_console_routes(app, Console(state_path, token=..., actions=DaemonActions(...)))``
serves it on the endpoint's application.
"""

from watcher.daemon.console.actions import ConsoleActions, DaemonActions
from watcher.daemon.console.app import Console, add_console_routes

__all__ = ["Console", "ConsoleActions", "DaemonActions", "add_console_routes"]
