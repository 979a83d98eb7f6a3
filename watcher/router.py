"""Which sinks each transition goes to. Pure: no I/O.

Until routes are configured, every transition goes to every sink.
"""

from __future__ import annotations

from collections.abc import Sequence

from watcher.model import Transition


def route(transitions: Sequence[Transition], sink_names: Sequence[str]) -> dict[str, list[str]]:
    """Map each transition id to the names of the sinks it is delivered to."""
    return {transition.id: list(sink_names) for transition in transitions}
