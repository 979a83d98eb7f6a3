"""What both backends make of an ``invocations`` row: the snapshot and the row ``status``
shows. A row is anything read by column name (``sqlite3.Row``, ``asyncpg.Record``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Protocol

from watcher.core.model import Snapshot
from watcher.store.records import InvocationRow

SNAPSHOT_FIELDS = tuple(f.name for f in fields(Snapshot))
"""The snapshot's columns, in the dataclass's order."""

_BOOL_FIELDS = frozenset(f.name for f in fields(Snapshot) if f.type in ("bool", bool))


class Row(Protocol):
    def __getitem__(self, name: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


def snapshot_of_row(row: Row) -> Snapshot:
    """One ``invocations`` row's snapshot (SQLite keeps booleans as 0 and 1)."""
    values = {name: row[name] for name in SNAPSHOT_FIELDS}
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    return Snapshot(**values)


def invocation_row(row: Row) -> InvocationRow:
    """One ``invocations`` row as ``status`` shows it (``silenced_by`` when the query joined
    it in)."""
    return InvocationRow(
        key=row["key"],
        api=row["api"],
        service=row["service"],
        function=row["function"],
        qualifier=row["qualifier"],
        invocation_id=row["invocation_id"],
        snapshot=snapshot_of_row(row),
        last_polled_ms=row["last_polled_ms"],
        # keys(): ``in`` on a sqlite3.Row looks at its values, not its column names.
        silenced_by=(row["silenced_by"] or "") if "silenced_by" in row.keys() else "",  # noqa: SIM118
    )
