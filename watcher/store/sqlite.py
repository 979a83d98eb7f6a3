"""The durable state: SQLite in WAL mode, one transaction per poll that changed something.

Tables: ``invocations`` (the last snapshot of each), ``transitions`` (the log, keyed by the
deterministic transition id) and ``outbox`` (one row per transition and sink, until sent).
``commit`` writes a snapshot, its transitions and their outbox rows together, so a kill -9
either loses the whole poll (it is repeated, and re-derives the same ids) or none of it.
The schema is versioned with ``PRAGMA user_version`` and migrated forward on open.
An exclusive lock file keeps a second daemon off the same state. No network here.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

from watcher.core.invocation import InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.route import Target

_SNAPSHOT_FIELDS = tuple(f.name for f in fields(Snapshot))
_BOOL_FIELDS = frozenset(f.name for f in fields(Snapshot) if f.type in ("bool", bool))

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
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StateStoreError(Exception):
    """The state DB cannot be used; the message says which file, why, and what to do."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One pending delivery of one transition to one sink."""

    seq: int
    transition_id: str
    invocation_key: str
    attempts: int
    next_attempt_ms: int
    created_ms: int
    severity: str = "info"
    template: str | None = None


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """One sink's share of the outbox."""

    sink: str
    pending: int
    dead: int
    oldest_created_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery given up on: kept until redelivered."""

    seq: int
    sink: str
    transition_id: str
    invocation_key: str
    attempts: int
    last_error: str
    dead_ms: int
    type: str


@dataclass(frozen=True, slots=True)
class InvocationRow:
    """An invocation as ``fc-watcher status`` shows it."""

    key: str
    api: str
    service: str | None
    function: str
    qualifier: str | None
    invocation_id: str
    snapshot: Snapshot
    last_polled_ms: int


def _explain(path: Path, exc: sqlite3.Error) -> StateStoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StateStoreError(
            f"state DB {path} is locked by another process; stop it, or point state.path "
            "at another file"
        )
    if "not a database" in text or "malformed" in text:
        return StateStoreError(
            f"state DB {path} is not a usable SQLite database ({text}); move it aside "
            "(nothing is deleted) and fc-watcher will start a new one"
        )
    if "unable to open" in text or "readonly" in text:
        return StateStoreError(
            f"cannot open state DB {path} for writing ({text}); check the directory exists "
            "and is writable by this user"
        )
    return StateStoreError(f"state DB {path}: {text}")


class StateStore:
    """All reads and writes of the state DB. Not thread-safe: one event loop owns it."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock: IO[str] | None) -> None:
        self.path = path
        self._db = connection
        self._lock = lock

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        readonly: bool = False,
        beside_daemon: bool = False,
        busy_timeout_s: float = 5.0,
    ) -> StateStore:
        """Open (creating and migrating if needed) the state DB at ``path``.

        ``beside_daemon`` opens an existing DB for small writes (``redeliver``) without the
        daemon's lock: SQLite itself serialises the writes. ``busy_timeout_s`` is how long a
        write waits for another process's transaction.
        """
        if (readonly or beside_daemon) and not path.exists():
            raise StateStoreError(f"state DB {path} does not exist yet; run the watcher first")
        lock = None if readonly or beside_daemon else cls._take_lock(path)
        db: sqlite3.Connection | None = None
        try:
            if readonly:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout_s)
            else:
                db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL survives a process crash (kill -9); only power loss may lose
                # the last commits, which then are simply polled again.
                db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            store = cls(path, db, lock)
            store._migrate(readonly)
            return store
        except BaseException as exc:
            if db is not None:
                db.close()
            if lock is not None:
                lock.close()
            if isinstance(exc, sqlite3.Error):
                raise _explain(path, exc) from None
            raise

    @staticmethod
    def _take_lock(path: Path) -> IO[str]:
        lock_path = path.with_name(path.name + ".lock")
        try:
            handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
        except OSError as exc:
            raise StateStoreError(
                f"cannot create {lock_path} ({exc.strerror}); check that {path.parent} exists "
                "and is writable"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StateStoreError(
                f"state DB {path} is in use by another fc-watcher; stop it first, or give "
                "this one another state.path"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def _migrate(self, readonly: bool) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateStoreError(
                f"state DB {self.path} has schema version {version}, newer than this "
                f"fc-watcher understands ({SCHEMA_VERSION}); upgrade fc-watcher"
            )
        if version == SCHEMA_VERSION:
            return
        if readonly:
            raise StateStoreError(
                f"state DB {self.path} has schema version {version}; run the watcher once "
                "to migrate it"
            )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for steps in _MIGRATIONS[version:]:
                for statement in steps:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- snapshots -------------------------------------------------------------------------

    @staticmethod
    def _snapshot(row: sqlite3.Row) -> Snapshot:
        values = {name: row[name] for name in _SNAPSHOT_FIELDS}
        for name in _BOOL_FIELDS:
            values[name] = bool(values[name])
        return Snapshot(**values)

    def load_snapshots(self) -> dict[str, Snapshot]:
        """Every stored snapshot, by invocation key."""
        try:
            rows = self._db.execute("SELECT * FROM invocations").fetchall()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        return {row["key"]: self._snapshot(row) for row in rows}

    def invocation_rows(self) -> list[InvocationRow]:
        """Every stored invocation, for ``status``."""
        try:
            rows = self._db.execute("SELECT * FROM invocations ORDER BY key").fetchall()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        return [
            InvocationRow(
                key=row["key"],
                api=row["api"],
                service=row["service"],
                function=row["function"],
                qualifier=row["qualifier"],
                invocation_id=row["invocation_id"],
                snapshot=self._snapshot(row),
                last_polled_ms=row["last_polled_ms"],
            )
            for row in rows
        ]

    # -- the one write per changed poll -------------------------------------------------------

    def commit(
        self,
        ref: InvocationRef,
        snapshot: Snapshot,
        *,
        transitions: Sequence[Transition],
        routes: Mapping[str, Sequence[Target]],
        now_ms: int,
    ) -> list[Transition]:
        """Write a snapshot, its transitions and their outbox rows in one transaction.

        ``routes`` maps a transition id to its delivery targets. Returns the transitions that
        were new; one already in the log (re-derived after a crash) is not inserted again.
        """
        key = ref.key
        fn = ref.function_ref
        identity = (fn.api.value, fn.service, fn.function, fn.qualifier, ref.invocation_id)
        columns: tuple[str, ...] = ("key", "api", "service", "function", "qualifier")
        columns += ("invocation_id", *_SNAPSHOT_FIELDS, "last_polled_ms")
        values = (key, *identity, *(getattr(snapshot, n) for n in _SNAPSHOT_FIELDS), now_ms)
        updates = ", ".join(f"{name}=excluded.{name}" for name in columns[1:])
        fresh: list[Transition] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    f"INSERT INTO invocations ({', '.join(columns)}) "  # noqa: S608 (names are ours)
                    f"VALUES ({', '.join('?' * len(columns))}) "
                    f"ON CONFLICT (key) DO UPDATE SET {updates}",
                    values,
                )
                for transition in transitions:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO transitions (id, invocation_key, type, "
                        "observed_ms, data) VALUES (?, ?, ?, ?, ?)",
                        (
                            transition.id,
                            key,
                            transition.type.value,
                            transition.observed_ms,
                            json.dumps(transition.to_dict(), separators=(",", ":")),
                        ),
                    )
                    if cursor.rowcount != 1:
                        continue
                    fresh.append(transition)
                    self._db.executemany(
                        "INSERT OR IGNORE INTO outbox (transition_id, invocation_key, sink, "
                        "created_ms, next_attempt_ms, severity, template) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (transition.id, key, t.sink, now_ms, now_ms, t.severity, t.template)
                            for t in routes.get(transition.id, ())
                        ],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        return fresh

    def record_polled(self, last_polled_ms: Mapping[str, int]) -> None:
        """Persist last-poll times, batched: unchanged polls do not write, so this runs at
        shutdown (``status`` shows last-poll times as of the last write)."""
        self._update(
            "UPDATE invocations SET last_polled_ms = ? WHERE key = ? AND last_polled_ms < ?",
            [(ms, key, ms) for key, ms in last_polled_ms.items()],
        )

    # -- the outbox ------------------------------------------------------------------------

    def pending(self, sink: str, limit: int) -> list[OutboxRow]:
        """Pending rows of ``sink`` in commit order, due or not.

        Without the transitions themselves: after an outage a dispatcher pass reads many rows
        to choose a few, and decoding every row's transition made each pass cost ~20 ms per
        1,000 rows. ``load_transitions`` reads the chosen ones.
        """
        try:
            rows = self._db.execute(
                "SELECT seq, transition_id, invocation_key, attempts, next_attempt_ms, "
                "created_ms, severity, template "
                "FROM outbox WHERE sink = ? AND state = 'pending' ORDER BY seq LIMIT ?",
                (sink, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        return [OutboxRow(*row) for row in rows]

    def load_transitions(self, ids: Sequence[str]) -> dict[str, Transition]:
        """The transitions with these ids, by id."""
        found: dict[str, Transition] = {}
        try:
            for start in range(0, len(ids), 500):  # well under SQLite's bound on parameters
                chunk = ids[start : start + 500]
                rows = self._db.execute(
                    "SELECT id, data FROM transitions "  # noqa: S608 (placeholders only)
                    f"WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update((row[0], Transition.from_dict(json.loads(row[1]))) for row in rows)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        return found

    def mark_sent(self, seqs: Iterable[int], now_ms: int) -> None:
        """Record successful delivery."""
        self._update(
            "UPDATE outbox SET state = 'sent', done_ms = ?, attempts = attempts + 1 WHERE seq = ?",
            [(now_ms, seq) for seq in seqs],
        )

    def mark_retry(self, seqs: Iterable[int], next_attempt_ms: int, error: str) -> None:
        """Record a failed attempt and when to try again."""
        self._update(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? "
            "WHERE seq = ?",
            [(next_attempt_ms, error[:500], seq) for seq in seqs],
        )

    def mark_dead(self, seqs: Iterable[int], now_ms: int, error: str) -> None:
        """Give up on rows: kept, shown by ``status``, re-sendable by ``redeliver``."""
        self._update(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, done_ms = ?, "
            "last_error = ? WHERE seq = ?",
            [(now_ms, error[:500], seq) for seq in seqs],
        )

    def _update(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead-lettered rows."""
        try:
            rows = self._db.execute(
                "SELECT o.seq, o.sink, o.transition_id, o.invocation_key, o.attempts, "
                "o.last_error, o.done_ms, t.type FROM outbox o "
                "JOIN transitions t ON t.id = o.transition_id "
                "WHERE o.state = 'dead' ORDER BY o.seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        return [DeadLetter(*row) for row in rows]

    def redeliver(self, *, sink: str | None, transition_id: str | None, now_ms: int) -> int:
        """Put dead rows (all, or of one sink, or of one transition) back in the queue."""
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?, "
            "created_ms = ?, done_ms = 0 WHERE state = 'dead'"
        )
        params: list[Any] = [now_ms, now_ms]
        if sink is not None:
            sql += " AND sink = ?"
            params.append(sink)
        if transition_id is not None:
            sql += " AND transition_id = ?"
            params.append(transition_id)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(sql, params)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _explain(self.path, exc) from None
        return int(cursor.rowcount)

    def outbox_by_sink(self) -> list[SinkBacklog]:
        """Pending and dead rows per sink, with the oldest pending row's creation time."""
        rows = self._db.execute(
            "SELECT sink, SUM(state = 'pending'), SUM(state = 'dead'), "
            "MIN(CASE WHEN state = 'pending' THEN created_ms END) FROM outbox GROUP BY sink"
        ).fetchall()
        return [
            SinkBacklog(row[0], int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))
            for row in rows
        ]

    def outbox_counts(self) -> dict[str, int]:
        """Rows by state."""
        rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return {row[0]: row[1] for row in rows}

    def transitions(self) -> list[Transition]:
        """The whole transition log, in commit order (for tests and ``status``)."""
        rows = self._db.execute("SELECT data FROM transitions ORDER BY seq").fetchall()
        return [Transition.from_dict(json.loads(row[0])) for row in rows]
