"""The one API budget every FC call spends: a concurrency cap and an optional rate cap.

Polls (and the List calls of discovery) share one ``ApiLimiter``, so the account's request
quota is protected however many parts of the engine call FC. It decides nothing about *what*
to call; the scheduler decides that. A reload changes the limits in place.
"""

from __future__ import annotations

import asyncio
from collections import deque

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

    A caller takes a slot with ``try_enter()`` (no wait: the hot path, two plain calls a poll)
    or, when that says no, ``await enter()``, and gives it back with ``leave()``; ``async with
    limiter:`` does the same for callers where a few microseconds do not matter. Waiters are
    served in arrival order. A counter rather than an ``asyncio.Semaphore``: it makes the
    uncontended path cheap, and lets a reload lower the cap for the very next request.
    """

    def __init__(self, concurrency: int, rate_per_s: float | None, clock: Clock) -> None:
        self._clock = clock
        self.concurrency = concurrency
        self.rate_per_s = rate_per_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._bucket = TokenBucket(rate_per_s, clock) if rate_per_s else None

    def set_limits(self, concurrency: int, rate_per_s: float | None) -> None:
        """New limits (reload), for every request that starts from now on."""
        self.concurrency = concurrency
        if rate_per_s != self.rate_per_s:
            self._bucket = TokenBucket(rate_per_s, self._clock) if rate_per_s else None
            self.rate_per_s = rate_per_s
        self._grant()

    def try_enter(self) -> bool:
        """Take a slot if one is free now and nobody waits for one; with a rate cap, always
        False (the cap is for low rates, where ``enter`` costs nothing that matters)."""
        if self.in_flight >= self.concurrency or self._waiters or self._bucket is not None:
            return False
        self.in_flight += 1
        return True

    async def enter(self) -> None:
        """Wait for a slot, then for the rate cap; the caller must ``leave()`` after."""
        if self.in_flight >= self.concurrency or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # ``_grant`` counted the slot for us before waking us
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.leave()  # granted, then cancelled: pass the slot on
                else:
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        if self._bucket is not None:
            delay_s = self._bucket.delay_s()
            if delay_s > 0:
                try:
                    await asyncio.sleep(delay_s)
                except BaseException:
                    self.leave()
                    raise

    def leave(self) -> None:
        """Give a slot back; the longest waiter gets it if the cap allows."""
        self.in_flight -= 1
        if self._waiters:
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self.in_flight < self.concurrency:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        if not self.try_enter():
            await self.enter()

    async def __aexit__(self, *_: object) -> None:
        self.leave()
