"""Where transitions go: one ``Sink`` protocol, one module per kind, one explicit registry.

A sink sends a batch of transitions and either returns (delivered) or raises ``SinkError``,
which says whether a retry can help. The outbox dispatcher owns retries and bookkeeping;
a sink holds no delivery state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from watcher.model import Transition


class SinkError(Exception):
    """A failed send. ``retryable`` decides between a later retry and the dead letters."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    """Something that can deliver transitions."""

    name: str
    max_batch: int
    """How many transitions one ``send`` may carry (1 for one request per transition)."""

    async def send(self, transitions: Sequence[Transition]) -> None:
        """Deliver all of ``transitions``, or raise ``SinkError``."""
        ...

    async def close(self) -> None:
        """Release what the sink holds."""
        ...
