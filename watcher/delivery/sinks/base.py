"""The sink contract: what the dispatcher may ask of every sink, and the defaults of each part.

A sink sends a batch and either returns (delivered) or raises ``SinkError``, which says whether
a retry can help. ``Sink`` gives every kind the same lifecycle (``reopen`` on SIGHUP, ``close``
when the daemon stops or a reload retires the sink) and the same ``Batching``, so no caller
ever asks which kind a sink is. A sink must not retry, wait for a grouping window, or touch the
outbox: the dispatcher's stages own those. The only delivery state a sink may keep is its own
rate window, because only the sink knows what its receiver allows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Batching:
    """How the dispatcher feeds one sink.

    The defaults are the cautious ones (one row a send, one send at a time, no waiting); a
    kind's own values come from its config settings, where an operator can change them.
    """

    max_batch: int = 1
    """How many transitions one ``send`` may carry (1: one request per transition)."""
    max_in_flight: int = 1
    """Single-row sends that may run at once, each for a different invocation (1: serial).

    Above 1 every send carries one row, so ``max_batch`` no longer applies.
    """
    group_wait_s: float = 0.0
    """Hold the first of a burst this long so the burst goes out as one message (0: never)."""

    def __post_init__(self) -> None:
        # Config validation already bounds these; this guards sinks built in code.
        if self.max_batch < 1 or self.max_in_flight < 1 or self.group_wait_s < 0:
            raise ValueError(f"impossible batching: {self!r}")


SERIAL = Batching()


class Sink(ABC):
    """Something that can deliver transitions. Subclasses implement ``send`` and override
    the hooks whose default does not fit."""

    def __init__(self, name: str, batching: Batching = SERIAL) -> None:
        self.name = name
        self.batching = batching

    def __repr__(self) -> str:
        # Never the settings: a robot's URL carries its token.
        return f"{type(self).__name__}(name={self.name!r})"

    def wait_s(self) -> float:
        """Seconds until the sink may send again under its rate limit (0: now)."""
        return 0.0

    @abstractmethod
    async def send(self, batch: Sequence[Outgoing]) -> None:
        """Deliver all of ``batch``, or raise ``SinkError``."""

    def reopen(self) -> None:
        """Called on SIGHUP: let go of whatever an operator may have moved (logrotate moves
        files). Most sinks hold nothing of the kind."""
        return None

    async def close(self) -> None:
        """Release what the sink holds; nothing is sent through it afterwards."""
        return None
