"""The SQLite backend of the state store: the embedded default for one host."""

from watcher.store.sqlite.schema import SCHEMA_VERSION
from watcher.store.sqlite.store import SqliteStore

__all__ = ["SCHEMA_VERSION", "SqliteStore"]
