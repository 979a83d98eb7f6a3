"""Where transitions go: one ``Sink`` base class, one module per kind, one explicit registry.

The contract and its defaults live in ``base``; they are re-exported here because this package
is where callers look for them. This module holds no logic of its own.
"""

from __future__ import annotations

from watcher.delivery.sinks.base import SERIAL, Batching, Outgoing, Sink, SinkError

__all__ = ["SERIAL", "Batching", "Outgoing", "Sink", "SinkError"]
