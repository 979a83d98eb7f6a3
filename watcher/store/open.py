"""Opening the state the config names: SQLite at ``state.path``, or PostgreSQL at
``state.url``."""

from __future__ import annotations

from watcher.config.models import StateSettings
from watcher.store.postgres.settings import postgres_target
from watcher.store.protocols import StateStore
from watcher.store.sqlite import SqliteStore


async def open_beside_daemon(state: StateSettings) -> StateStore:
    """The store for a command that writes beside a running daemon (``track``, ``silence``,
    ``redeliver``): a SQLite file must exist already and is not locked against the daemon; a
    PostgreSQL state is shared by design."""
    target = postgres_target(state)
    if target is not None:
        from watcher.store.postgres.store import open_postgres

        return await open_postgres(target[0], password=target[1])
    return await SqliteStore.open(state.sqlite_path(), beside_daemon=True)


async def open_store(state: StateSettings) -> StateStore:
    """The store for ``state``; raises ``StateStoreError`` (one line) if it cannot be used."""
    target = postgres_target(state)
    if target is not None:
        from watcher.store.postgres.store import open_postgres  # asyncpg only when used

        return await open_postgres(target[0], password=target[1])
    return await SqliteStore.open(state.sqlite_path())
