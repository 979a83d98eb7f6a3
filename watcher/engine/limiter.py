"""The one API budget every FC call spends: a concurrency cap and an optional rate cap.

Polls (and the List calls of discovery) share one ``ApiLimiter``, so the account's request
quota is protected however many parts of the engine call FC. It decides nothing about *what*
to call; the scheduler decides that. A reload changes the limits in place.
"""

from __future__ import annotations

import asyncio

from watcher.core.clock import Clock


class TokenBucket:
    """A request-rate cap: ``rate_per_s`` tokens a second, bursts up to one second's."""

    def __init__(self, rate_per_s: float, clock: Clock) -> None:
        self._rate = rate_per_s
        self._capacity = max(1.0, rate_per_s)
        self._tokens = self._capacity
        self._clock = clock
        self._updated = clock.monotonic()

    def delay_s(self) -> float:
        """Take a token; return how long to wait before using it (0 if available now)."""
        now = self._clock.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class ApiLimiter:
    """At most ``concurrency`` FC requests in flight, and at most ``rate_per_s`` a second.

    Use as ``async with limiter:`` around one request. A plain class, not a generator-based
    context manager: it is entered once per poll, and the generator cost 2 µs more a poll.
    """

    def __init__(self, concurrency: int, rate_per_s: float | None, clock: Clock) -> None:
        self._clock = clock
        self.concurrency = concurrency
        self.rate_per_s = rate_per_s
        self._slots = asyncio.Semaphore(concurrency)
        self._debt = 0
        """Slots to retire as their holders finish, after a reload lowered the concurrency."""
        self._bucket = TokenBucket(rate_per_s, clock) if rate_per_s else None

    def set_limits(self, concurrency: int, rate_per_s: float | None) -> None:
        """New limits (reload). A lower concurrency takes hold as running calls finish."""
        change = concurrency - self.concurrency
        self.concurrency = concurrency
        if change < 0:
            self._debt -= change
        else:
            repaid = min(change, self._debt)
            self._debt -= repaid
            for _ in range(change - repaid):
                self._slots.release()
        if rate_per_s != self.rate_per_s:
            self._bucket = TokenBucket(rate_per_s, self._clock) if rate_per_s else None
            self.rate_per_s = rate_per_s

    async def __aenter__(self) -> None:
        await self._slots.acquire()
        if self._bucket is not None:
            delay_s = self._bucket.delay_s()
            if delay_s > 0:
                await asyncio.sleep(delay_s)

    async def __aexit__(self, *_: object) -> None:
        if self._debt:
            self._debt -= 1
        else:
            self._slots.release()
