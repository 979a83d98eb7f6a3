"""The explicit sink registry: config ``type`` to the class that implements it."""

from __future__ import annotations

from collections.abc import Sequence

from watcher.config import SinkSettings
from watcher.sinks import Sink
from watcher.sinks.log import LogSink


def build_sinks(settings: Sequence[SinkSettings]) -> dict[str, Sink]:
    """One sink per configured entry, by name, in config order."""
    sinks: dict[str, Sink] = {}
    for entry in settings:
        sinks[entry.name] = LogSink(entry.name, entry.level)
    return sinks
