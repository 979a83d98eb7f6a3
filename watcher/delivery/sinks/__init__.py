"""Where transitions go: one ``Sink`` protocol, one module per kind, one explicit registry.

A sink sends a batch and either returns (delivered) or raises ``SinkError``, which says
whether a retry can help. The outbox dispatcher owns retries, grouping waits and bookkeeping;
a sink keeps no delivery state beyond its own rate window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from watcher.core.model import Transition


class SinkError(Exception):
    """A failed send. ``retryable`` decides between a later retry and the dead letters."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A transition on its way to one sink, with the route's presentation."""

    transition: Transition
    severity: str = "info"
    template: str | None = None


class Sink(Protocol):
    """Something that can deliver transitions."""

    name: str
    max_batch: int
    """How many transitions one ``send`` may carry (1: one request per transition)."""
    group_wait_s: float
    """Hold the first of a burst this long so the burst goes out as one message (0: never)."""
    max_in_flight: int
    """Single-row sends that may run at once, each for a different invocation (1: serial)."""

    def wait_s(self) -> float:
        """Seconds until the sink may send again under its rate limit (0: now)."""
        ...

    async def send(self, batch: Sequence[Outgoing]) -> None:
        """Deliver all of ``batch``, or raise ``SinkError``."""
        ...

    async def close(self) -> None:
        """Release what the sink holds."""
        ...
