"""The PostgreSQL schema, versioned in ``fc_watcher_schema`` and migrated forward on open.

The same tables as SQLite's schema version 9 (``watcher.store.sqlite.schema`` says what each
is for), in PostgreSQL's idiom: BIGINT milliseconds, BOOLEAN flags, identity sequences,
partial indexes for the pending and dead rows, statement-level triggers for the backlog counts.
Version 1 is all of it at once; version 2 adds the replicas' leases and outbox claims. A later
change is a new entry of ``_MIGRATIONS``, never an edit of an applied one.

Keys, sinks and ids are ``COLLATE "C"``: byte order, as in SQLite, so keyset paging (retention,
``status``) and every ORDER BY agree with the SQLite backend whatever the database's locale.
Text columns are TEXT, not JSONB: payloads are only ever read whole, and JSONB would reorder
keys and refuse the ``\\u0000`` a hostile FC body may carry.

Migrations run in one transaction under an advisory lock: replicas starting together queue on
the lock, the first migrates, the rest find the version current and go on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watcher.core.slots import SLOT_SQL, SLOTS
from watcher.store.errors import StateStoreError

if TYPE_CHECKING:
    import asyncpg

    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

# Any fixed 64-bit number: the lock only has to be the same for every fc-watcher.
ADVISORY_LOCK = 0x0FC_3A7C_4E25

_OUTBOX_SLOT = SLOT_SQL.format(key="regexp_replace(invocation_key, '/[^/]*$', '')")

_OUTBOX_COUNTS_FUNCTION = """
CREATE FUNCTION outbox_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Deltas per (sink, state), applied in key order: two transactions never take the
    -- counter rows in opposite orders, so counting cannot deadlock.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox_counts AS c (sink, state, total)
        SELECT sink, state, COUNT(*) FROM outbox_new GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (sink, state) DO UPDATE SET total = c.total + EXCLUDED.total;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO outbox_counts AS c (sink, state, total)
        SELECT sink, state, -COUNT(*) FROM outbox_old GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (sink, state) DO UPDATE SET total = c.total + EXCLUDED.total;
    ELSE
        INSERT INTO outbox_counts AS c (sink, state, total)
        SELECT sink, state, SUM(delta) FROM (
            SELECT o.sink, o.state, -1 AS delta FROM outbox_old o JOIN outbox_new n USING (seq)
            WHERE (o.sink, o.state) IS DISTINCT FROM (n.sink, n.state)
            UNION ALL
            SELECT n.sink, n.state, 1 FROM outbox_old o JOIN outbox_new n USING (seq)
            WHERE (o.sink, o.state) IS DISTINCT FROM (n.sink, n.state)
        ) d GROUP BY 1, 2 HAVING SUM(delta) != 0 ORDER BY 1, 2
        ON CONFLICT (sink, state) DO UPDATE SET total = c.total + EXCLUDED.total;
    END IF;
    RETURN NULL;
END $$"""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # Version 1: SQLite's versions 1 to 9.
    (
        """CREATE TABLE invocations (
            key TEXT COLLATE "C" PRIMARY KEY,
            api TEXT NOT NULL, service TEXT, function TEXT NOT NULL, qualifier TEXT,
            invocation_id TEXT NOT NULL,
            status TEXT, already_retried_times BIGINT NOT NULL DEFAULT 0,
            status_changes BIGINT NOT NULL DEFAULT 0,
            event_high_water BIGINT NOT NULL DEFAULT 0,
            started_ms BIGINT NOT NULL DEFAULT 0, end_ms BIGINT NOT NULL DEFAULT 0,
            error_message TEXT NOT NULL DEFAULT '',
            last_event_status TEXT NOT NULL DEFAULT '', last_event_ms BIGINT NOT NULL DEFAULT 0,
            not_found_count BIGINT NOT NULL DEFAULT 0,
            not_found_reported BOOLEAN NOT NULL DEFAULT FALSE,
            first_not_found_ms BIGINT NOT NULL DEFAULT 0,
            failing_episode BIGINT NOT NULL DEFAULT 0, failing BOOLEAN NOT NULL DEFAULT FALSE,
            changed_ms BIGINT NOT NULL DEFAULT 0,
            status_since_ms BIGINT NOT NULL DEFAULT 0,
            stuck_reported BIGINT NOT NULL DEFAULT 0,
            last_polled_ms BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX invocations_by_change ON invocations (changed_ms)",
        "CREATE INDEX invocations_by_status ON invocations (status, changed_ms)",
        "CREATE INDEX invocations_by_function ON invocations (function, changed_ms)",
        """CREATE TABLE transitions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT COLLATE "C" NOT NULL UNIQUE,
            invocation_key TEXT COLLATE "C" NOT NULL,
            type TEXT NOT NULL,
            observed_ms BIGINT NOT NULL,
            data TEXT NOT NULL,
            silenced_by TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX transitions_by_invocation ON transitions (invocation_key, seq)",
        "CREATE INDEX transitions_by_time ON transitions (observed_ms)",
        # No foreign key to transitions: SQLite never enforced its one, so a state copied
        # from SQLite may hold rows without their transition, and they must still copy.
        """CREATE TABLE outbox (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            transition_id TEXT COLLATE "C" NOT NULL,
            invocation_key TEXT COLLATE "C" NOT NULL,
            sink TEXT COLLATE "C" NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
            attempts BIGINT NOT NULL DEFAULT 0,
            row_failures BIGINT NOT NULL DEFAULT 0,
            next_attempt_ms BIGINT NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            created_ms BIGINT NOT NULL,
            done_ms BIGINT NOT NULL DEFAULT 0,
            severity TEXT NOT NULL DEFAULT 'info',
            template TEXT,
            UNIQUE (transition_id, sink)
        )""",
        "CREATE INDEX outbox_pending ON outbox (sink, seq) WHERE state = 'pending'",
        "CREATE INDEX outbox_oldest ON outbox (sink, created_ms) WHERE state = 'pending'",
        "CREATE INDEX outbox_dead ON outbox (seq) WHERE state = 'dead'",
        "CREATE INDEX outbox_by_invocation ON outbox (invocation_key)",
        """CREATE TABLE outbox_counts (
            sink TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL, total BIGINT NOT NULL,
            PRIMARY KEY (sink, state)
        )""",
        _OUTBOX_COUNTS_FUNCTION,
        "CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox REFERENCING NEW TABLE AS "
        "outbox_new FOR EACH STATEMENT EXECUTE FUNCTION outbox_count_rows()",
        "CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox REFERENCING OLD TABLE AS "
        "outbox_old FOR EACH STATEMENT EXECUTE FUNCTION outbox_count_rows()",
        "CREATE TRIGGER outbox_counts_update AFTER UPDATE ON outbox REFERENCING OLD TABLE AS "
        "outbox_old NEW TABLE AS outbox_new FOR EACH STATEMENT EXECUTE FUNCTION "
        "outbox_count_rows()",
        """CREATE TABLE sink_health (
            sink TEXT COLLATE "C" PRIMARY KEY,
            healthy BOOLEAN NOT NULL,
            since_ms BIGINT NOT NULL,
            last_success_ms BIGINT NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE live (
            key TEXT COLLATE "C" PRIMARY KEY,
            api TEXT NOT NULL, service TEXT, function TEXT NOT NULL, qualifier TEXT,
            invocation_id TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}',
            added_ms BIGINT NOT NULL,
            changed_ms BIGINT NOT NULL,
            rev BIGINT NOT NULL,
            removed BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX live_by_rev ON live (rev)",
        "CREATE INDEX live_removed ON live (changed_ms) WHERE removed",
        # One row: its row lock serialises the writers of live ids and silences, so their
        # revisions commit in order and a reader never sees revision N+1 before N.
        """CREATE TABLE live_revision (
            only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
            rev BIGINT NOT NULL
        )""",
        "INSERT INTO live_revision VALUES (TRUE, 0)",
        """CREATE TABLE watermarks (
            entry TEXT COLLATE "C" PRIMARY KEY,
            started_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL
        )""",
        """CREATE TABLE silences (
            id TEXT COLLATE "C" PRIMARY KEY,
            matchers TEXT NOT NULL,
            starts_ms BIGINT NOT NULL,
            ends_ms BIGINT NOT NULL,
            comment TEXT NOT NULL,
            author TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            expired_ms BIGINT NOT NULL DEFAULT 0,
            rev BIGINT NOT NULL
        )""",
        "CREATE INDEX silences_by_rev ON silences (rev)",
        "CREATE INDEX silences_by_end ON silences (ends_ms)",
        """CREATE TABLE daemon_info (
            key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL, updated_ms BIGINT NOT NULL
        )""",
    ),
    # Version 2: replicas sharing the work (``watcher.store.postgres.leases``).
    (
        """CREATE TABLE replicas (
            id TEXT COLLATE "C" PRIMARY KEY,
            started_ms BIGINT NOT NULL,
            heartbeat_ms BIGINT NOT NULL
        )""",
        f"""CREATE TABLE slots (
            slot INTEGER PRIMARY KEY CHECK (slot >= 0 AND slot < {SLOTS}),
            owner TEXT COLLATE "C",
            epoch BIGINT NOT NULL DEFAULT 0,
            expires_ms BIGINT NOT NULL DEFAULT 0
        )""",
        f"INSERT INTO slots (slot) SELECT generate_series(0, {SLOTS - 1})",
        "ALTER TABLE transitions ADD COLUMN committed_by TEXT NOT NULL DEFAULT ''",
        # The slot of the row's function, from its invocation key (ids never hold '/'):
        # computed by the server, so rows copied from SQLite or written before slots existed
        # get the slot Python's ``slot_of`` gives, and no writer can get it wrong.
        f"ALTER TABLE outbox ADD COLUMN slot INTEGER GENERATED ALWAYS AS "
        f"({_OUTBOX_SLOT}::integer) STORED",
        'ALTER TABLE outbox ADD COLUMN claimed_by TEXT COLLATE "C"',
        "ALTER TABLE outbox ADD COLUMN claim_until_ms BIGINT NOT NULL DEFAULT 0",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS fc_watcher_schema (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    version INTEGER NOT NULL
)"""


async def _version(conn: Conn) -> int:
    if await conn.fetchval("SELECT to_regclass('fc_watcher_schema')") is None:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM fc_watcher_schema"))


def _check(version: int, target: str, *, readonly: bool) -> bool:
    """True if ``version`` is current; raise if it is newer, or older and not ours to migrate."""
    if version > SCHEMA_VERSION:
        raise StateStoreError(
            f"state DB {target} has schema version {version}, newer than this fc-watcher "
            f"understands ({SCHEMA_VERSION}); upgrade fc-watcher"
        )
    if version < SCHEMA_VERSION and readonly:
        raise StateStoreError(
            f"state DB {target} has schema version {version}; run the watcher once to migrate it"
        )
    return version == SCHEMA_VERSION


async def migrate(conn: Conn, target: str, *, readonly: bool = False) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` in one transaction under the advisory lock, or
    refuse clearly. A current schema costs one read and no lock."""
    if _check(await _version(conn), target, readonly=readonly):
        return
    async with conn.transaction():
        # Held to the end of the transaction: a replica waiting here then reads the version
        # the first one committed, and applies nothing twice.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK)
        await conn.execute(_VERSION_TABLE)
        version = await _version(conn)
        if _check(version, target, readonly=readonly):
            return
        for steps in _MIGRATIONS[version:]:
            for statement in steps:
                await conn.execute(statement)
        await conn.execute(
            "INSERT INTO fc_watcher_schema (only_row, version) VALUES (TRUE, $1) "
            "ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
            SCHEMA_VERSION,
        )
