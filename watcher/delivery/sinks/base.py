"""The sink contract: what the dispatcher may ask of every sink, and the defaults of each part.

A sink sends a batch and either returns (delivered) or raises ``SinkError``, which says whether
a retry can help. ``Sink`` gives every kind the same lifecycle (``reopen`` on SIGHUP, ``close``
when the daemon stops or a reload retires the sink), the same ``Batching``, and the same limits,
so no caller ever asks which kind a sink is. ``send`` holds each request within the sink's
limits (``concurrency`` requests in flight, its rate gates) and then calls the kind's
``deliver``: the limits hold whoever calls ``send``, and a held send waits, it never fails. A
sink must not retry, wait for a grouping window, or touch the outbox: the dispatcher's stages
own those. The only delivery state a sink may keep is its limits, because only the sink knows
what its receiver allows and what it has in flight.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from watcher.core.model import Transition
from watcher.delivery.hold import RateGate, RateWindow, TokenBucket


class FailureKind(Enum):
    """What kind of failure a ``SinkError`` was, for telling the receiver's fault from a row's."""

    TRANSPORT = "transport"
    """No answer at all: connection refused or reset, a timeout, DNS. Never the row's fault."""
    STATUS = "status"
    """An answer asking for a retry (408, 425, 429, 5xx but 501, a robot's throttling code)."""
    PERMANENT = "permanent"
    """Retrying cannot help: the row goes to the dead letters."""


class SinkError(Exception):
    """A failed send. ``retryable`` decides between a later retry and the dead letters;
    ``kind`` (default: ``STATUS`` if retryable, else ``PERMANENT``) tells sink health what
    happened."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        kind: FailureKind | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        if not retryable:
            kind = FailureKind.PERMANENT
        self.kind = kind or FailureKind.STATUS


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
    """The sink's ``concurrency``: sends that may run at once (1: serial). ``Sink.send`` holds
    it; the dispatcher plans by it.

    Above 1 every send carries one row, each of a different invocation, so ``max_batch`` no
    longer applies.
    """
    group_wait_s: float = 0.0
    """Hold the first of a burst this long so the burst goes out as one message (0: never)."""

    def __post_init__(self) -> None:
        # Config validation already bounds these; this guards sinks built in code.
        if self.max_batch < 1 or self.max_in_flight < 1 or self.group_wait_s < 0:
            raise ValueError(f"impossible batching: {self!r}")


SERIAL = Batching()


@dataclass(frozen=True, slots=True)
class Timer:
    """The clock the rate limits read and the sleep that waits on it; tests pass a manual pair
    so they can move time themselves."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


REAL_TIME = Timer()


class Sink(ABC):
    """Something that can deliver transitions. Subclasses implement ``deliver`` and override
    the hooks whose default does not fit.

    ``rate_per_s`` (a token bucket) and ``per_minute`` (a sliding window) are the receiver's
    rate limits; ``batching.max_in_flight`` is its concurrency. All are held in ``send``.
    """

    def __init__(
        self,
        name: str,
        batching: Batching = SERIAL,
        *,
        rate_per_s: float | None = None,
        per_minute: int | None = None,
        timer: Timer = REAL_TIME,
    ) -> None:
        self.name = name
        self.batching = batching
        self._timer = timer
        self._gates: list[RateGate] = []
        if per_minute is not None:
            self._gates.append(RateWindow(per_minute, timer.now))
        if rate_per_s is not None:
            self._gates.append(TokenBucket(rate_per_s, timer.now))
        self._slots = asyncio.Semaphore(batching.max_in_flight)
        # One sender at a time checks and charges the gates, so waiters go in arrival order and
        # two of them never take the same token.
        self._pacing = asyncio.Lock()
        self._in_flight = 0

    def __repr__(self) -> str:
        # Never the settings: a robot's URL carries its token.
        return f"{type(self).__name__}(name={self.name!r})"

    def wait_s(self) -> float:
        """Seconds until the sink may send again under its rate limits (0: now)."""
        return max((gate.wait_s() for gate in self._gates), default=0.0)

    def room(self) -> int:
        """How many sends could start now without waiting: free slots, and rate to spare."""
        free = self.batching.max_in_flight - self._in_flight
        return max(0, min([free, *(gate.room() for gate in self._gates)]))

    async def send(self, batch: Sequence[Outgoing]) -> None:
        """Deliver all of ``batch`` within the sink's limits, or raise ``SinkError``.

        A send over the limits waits here for a slot, then for the rate; the wait is not part
        of the attempt (no timeout runs, nothing fails), and a cancelled wait sends nothing.
        """
        # The slot first, then the rate: a token taken while waiting for a slot would let the
        # sends that waited go out together, faster than the rate.
        async with self._slots:
            self._in_flight += 1
            try:
                if self._gates:
                    await self._pace()
                await self.deliver(batch)
            finally:
                self._in_flight -= 1

    async def _pace(self) -> None:
        """Wait until every rate gate lets one more send through, then charge them all."""
        async with self._pacing:
            while (wait_s := self.wait_s()) > 0:
                await self._timer.sleep(wait_s)
            for gate in self._gates:
                gate.record()

    @abstractmethod
    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        """Deliver all of ``batch`` now (``send`` has already waited), or raise ``SinkError``."""

    def reopen(self) -> None:
        """Called on SIGHUP: let go of whatever an operator may have moved (logrotate moves
        files). Most sinks hold nothing of the kind."""
        return None

    async def close(self) -> None:
        """Release what the sink holds; nothing is sent through it afterwards."""
        return None
