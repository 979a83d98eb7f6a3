"""What a store mixin needs of ``SqliteStore``: its connection and its two hops (a read, and
a write transaction), all on the store's one worker thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Hops(Protocol):
    """The store, as its mixins (tracking, silences) see it."""

    @property
    def _db(self) -> sqlite3.Connection: ...

    async def _read(self, work: Callable[[], T]) -> T: ...

    async def _write(
        self, work: Callable[[], T], *, outbox_changed: bool = ..., name: str = ...
    ) -> T: ...
