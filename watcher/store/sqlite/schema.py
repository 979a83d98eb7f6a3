"""The SQLite schema, versioned with ``PRAGMA user_version`` and migrated forward on open.

Tables: ``invocations`` (the last snapshot of each), ``transitions`` (the log, keyed by the
deterministic transition id), ``outbox`` (one row per transition and sink) and, from version
4, ``outbox_counts`` (rows per sink and state, kept by triggers so that counting the backlog
never scans the outbox), from version 5, ``sink_health`` (each sink's circuit, written only
when it opens or closes) and, from version 6, ``live`` (ids tracked by ``fc-watcher track`` or
the HTTP API, each change numbered by ``live_revision``) and ``watermarks`` (how far each
discover entry's scans have got).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from watcher.store.errors import StateStoreError

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # Version 1: snapshots, the transition log and the outbox.
    (
        """CREATE TABLE invocations (
            key TEXT PRIMARY KEY,
            api TEXT NOT NULL, service TEXT, function TEXT NOT NULL, qualifier TEXT,
            invocation_id TEXT NOT NULL,
            status TEXT, already_retried_times INTEGER NOT NULL DEFAULT 0,
            status_changes INTEGER NOT NULL DEFAULT 0,
            event_high_water INTEGER NOT NULL DEFAULT 0,
            started_ms INTEGER NOT NULL DEFAULT 0, end_ms INTEGER NOT NULL DEFAULT 0,
            error_message TEXT NOT NULL DEFAULT '',
            last_event_status TEXT NOT NULL DEFAULT '', last_event_ms INTEGER NOT NULL DEFAULT 0,
            not_found_count INTEGER NOT NULL DEFAULT 0,
            not_found_reported INTEGER NOT NULL DEFAULT 0,
            first_not_found_ms INTEGER NOT NULL DEFAULT 0,
            failing_episode INTEGER NOT NULL DEFAULT 0, failing INTEGER NOT NULL DEFAULT 0,
            changed_ms INTEGER NOT NULL DEFAULT 0,
            last_polled_ms INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE transitions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            invocation_key TEXT NOT NULL,
            type TEXT NOT NULL,
            observed_ms INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX transitions_by_invocation ON transitions (invocation_key, seq)",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            transition_id TEXT NOT NULL REFERENCES transitions (id),
            invocation_key TEXT NOT NULL,
            sink TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            created_ms INTEGER NOT NULL,
            done_ms INTEGER NOT NULL DEFAULT 0,
            UNIQUE (transition_id, sink)
        )""",
        "CREATE INDEX outbox_pending ON outbox (sink, state, seq)",
    ),
    # Version 2: how a route wants a delivery presented.
    (
        "ALTER TABLE outbox ADD COLUMN severity TEXT NOT NULL DEFAULT 'info'",
        "ALTER TABLE outbox ADD COLUMN template TEXT",
    ),
    # Version 3: stuck detection.
    (
        "ALTER TABLE invocations ADD COLUMN status_since_ms INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE invocations ADD COLUMN stuck_reported INTEGER NOT NULL DEFAULT 0",
    ),
    # Version 4: backlog counts without scans, and the indexes retention deletes by.
    # Triggers (not the daemon) keep the counts, so a ``redeliver`` run from another process
    # keeps them right too.
    (
        """CREATE TABLE outbox_counts (
            sink TEXT NOT NULL, state TEXT NOT NULL, rows INTEGER NOT NULL,
            PRIMARY KEY (sink, state)
        ) WITHOUT ROWID""",
        "INSERT INTO outbox_counts SELECT sink, state, COUNT(*) FROM outbox GROUP BY sink, state",
        """CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
            INSERT INTO outbox_counts VALUES (new.sink, new.state, 1)
            ON CONFLICT (sink, state) DO UPDATE SET rows = rows + 1;
        END""",
        """CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
            UPDATE outbox_counts SET rows = rows - 1 WHERE sink = old.sink AND state = old.state;
        END""",
        """CREATE TRIGGER outbox_counts_update AFTER UPDATE OF state ON outbox
        WHEN old.state != new.state BEGIN
            UPDATE outbox_counts SET rows = rows - 1 WHERE sink = old.sink AND state = old.state;
            INSERT INTO outbox_counts VALUES (new.sink, new.state, 1)
            ON CONFLICT (sink, state) DO UPDATE SET rows = rows + 1;
        END""",
        "CREATE INDEX outbox_oldest ON outbox (sink, state, created_ms)",
        "CREATE INDEX outbox_by_invocation ON outbox (invocation_key)",
        "CREATE INDEX invocations_by_change ON invocations (changed_ms)",
    ),
    # Version 5: sink health. A row's own failures apart from its attempts (an outage's
    # failures must not grow a row's backoff), and each sink's circuit as last changed.
    (
        "ALTER TABLE outbox ADD COLUMN row_failures INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE sink_health (
            sink TEXT PRIMARY KEY,
            healthy INTEGER NOT NULL,
            since_ms INTEGER NOT NULL,
            last_success_ms INTEGER NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT ''
        ) WITHOUT ROWID""",
    ),
    # Version 6: live tracking and discover watermarks. A removal keeps its row (``removed``),
    # so a daemon that asks "what changed after revision N" hears of it; retention deletes
    # old removed rows. Revisions come from a counter row, not MAX(rev): pruning the newest
    # removed row must never hand its revision out again (a daemon past it would miss that).
    (
        """CREATE TABLE live (
            key TEXT PRIMARY KEY,
            api TEXT NOT NULL, service TEXT, function TEXT NOT NULL, qualifier TEXT,
            invocation_id TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}',
            added_ms INTEGER NOT NULL,
            changed_ms INTEGER NOT NULL,
            rev INTEGER NOT NULL,
            removed INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        "CREATE INDEX live_by_rev ON live (rev)",
        "CREATE INDEX live_removed ON live (changed_ms) WHERE removed = 1",
        """CREATE TABLE live_revision (
            only INTEGER PRIMARY KEY CHECK (only = 0),
            rev INTEGER NOT NULL
        )""",
        "INSERT INTO live_revision VALUES (0, 0)",
        """CREATE TABLE watermarks (
            entry TEXT PRIMARY KEY,
            started_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    # Version 7: silences. Matchers are JSON (the route matchers, with globs); times are wall
    # clock ms, as people set them. ``expired_ms`` ends one early. A transition records the
    # silence that held it back from the alerting sinks (it is still recorded and logged).
    (
        """CREATE TABLE silences (
            id TEXT PRIMARY KEY,
            matchers TEXT NOT NULL,
            starts_ms INTEGER NOT NULL,
            ends_ms INTEGER NOT NULL,
            comment TEXT NOT NULL,
            author TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            expired_ms INTEGER NOT NULL DEFAULT 0,
            rev INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX silences_by_rev ON silences (rev)",
        "CREATE INDEX silences_by_end ON silences (ends_ms)",
        "ALTER TABLE transitions ADD COLUMN silenced_by TEXT NOT NULL DEFAULT ''",
    ),
    # Version 8: what the status page reads by: transitions by time (the chart, the last
    # 24 h's failures) and invocations by status and by function (filtered, paged lists).
    (
        "CREATE INDEX transitions_by_time ON transitions (observed_ms, type)",
        "CREATE INDEX invocations_by_status ON invocations (status, changed_ms)",
        "CREATE INDEX invocations_by_function ON invocations (function, changed_ms)",
    ),
    # Version 9: what the running daemon says of itself for ``status`` (its API demand against
    # the budget), written only when it changes.
    (
        """CREATE TABLE daemon_info (
            key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ms INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(db: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` in one transaction, or refuse clearly."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StateStoreError(
            f"state DB {path} has schema version {version}, newer than this "
            f"fc-watcher understands ({SCHEMA_VERSION}); upgrade fc-watcher"
        )
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise StateStoreError(
            f"state DB {path} has schema version {version}; run the watcher once to migrate it"
        )
    db.execute("BEGIN IMMEDIATE")
    try:
        for steps in _MIGRATIONS[version:]:
            for statement in steps:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            # A failed ROLLBACK (SQLite already rolled back) must not hide the first error.
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
