"""The scheduler's run loop: start due polls while a slot is free, sleep until the next is due.

Apart from the scheduler so each stays one screen of logic: the loop needs only what is due
(``pop_due``), when the next is (``next_due_in_s``), one poll (``poll``) and the settings.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod

import structlog

from watcher.config.models import PollSettings
from watcher.core.clock import Clock
from watcher.engine.bounded import finish_within
from watcher.engine.poll import PollOutcome

_log = structlog.get_logger("watcher.scheduler")


class RunLoop(ABC):
    """The daemon loop around a scheduler's queue."""

    def __init__(self) -> None:
        self._sleeper: asyncio.Future[None] | None = None
        self._sleep_until = float("inf")
        self._at_capacity = False

    @property
    @abstractmethod
    def settings(self) -> PollSettings: ...

    @property
    @abstractmethod
    def clock(self) -> Clock: ...

    @abstractmethod
    def pop_due(self, limit: int | None = None) -> list[str]: ...

    @abstractmethod
    def next_due_in_s(self) -> float | None: ...

    @abstractmethod
    async def poll(self, key: str) -> PollOutcome: ...

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then let in-flight polls finish within the stop bound."""
        inflight: set[asyncio.Task[None]] = set()
        stop_waiter = asyncio.ensure_future(stop.wait())
        stop_waiter.add_done_callback(lambda _: self._wake())

        def finished(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if self._at_capacity:
                self._at_capacity = False
                self._wake()  # a slot is free for an overdue poll

        async def poll_while_due(key: str) -> None:
            # A slot, once taken, goes straight on to the next overdue poll: when polls are
            # behind, that saves a task and a turn of this loop per poll.
            while True:
                await self.poll(key)
                if stop.is_set() or len(inflight) > self.settings.concurrency:
                    return  # stopping, or a reload lowered the concurrency
                more = self.pop_due(1)
                if not more:
                    return
                key = more[0]

        try:
            while not stop.is_set():
                # Polls start only when a slot is free: overdue ones wait on the heap, in due
                # order, rather than as thousands of tasks parked on a semaphore (which cost
                # CPU on every hand-over, and would hide the wait from the lag measure).
                free = self.settings.concurrency - len(inflight)
                for key in self.pop_due(free) if free > 0 else ():
                    task = asyncio.create_task(poll_while_due(key))
                    inflight.add(task)
                    task.add_done_callback(finished)
                await self._sleep(full=len(inflight) >= self.settings.concurrency)
        finally:
            stop_waiter.cancel()
            self._sleeper = None
        done, cancelled = await finish_within(inflight, self.settings.stop_timeout_s)
        if done or cancelled:
            _log.info("polls_stopped", finished=done, cancelled=cancelled)

    async def _sleep(self, *, full: bool) -> None:
        """Wait until a poll is due, a slot frees up (when ``full``), or a second passed."""
        loop = asyncio.get_running_loop()
        wait_s = self.next_due_in_s()
        timeout_s = 1.0 if wait_s is None else min(max(wait_s, 0.001), 1.0)
        # A bare future and one timer per wait: this loop turns up to thousands of times a
        # second, and wait_for's extra task per turn showed in profiles.
        self._sleeper = loop.create_future()
        if full and wait_s is not None:
            # Only a finished poll can start another, so new due times must not wake the
            # loop; ``finished`` will.
            self._at_capacity = True
            self._sleep_until = -math.inf
            timeout_s = 1.0
        else:
            self._sleep_until = self.clock.monotonic() + timeout_s
        timer = loop.call_later(timeout_s, self._wake)
        await self._sleeper
        timer.cancel()

    def _wake(self) -> None:
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)
