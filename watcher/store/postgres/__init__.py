"""The PostgreSQL backend of the state store: one state shared by several hosts."""

from watcher.store.postgres.diagnose import redact
from watcher.store.postgres.schema import SCHEMA_VERSION
from watcher.store.postgres.store import PostgresStore, open_postgres

__all__ = ["SCHEMA_VERSION", "PostgresStore", "open_postgres", "redact"]
