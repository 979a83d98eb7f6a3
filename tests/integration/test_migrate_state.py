"""``fc-watcher migrate-state``: a single host's SQLite state copied into a real PostgreSQL
(``tests.pg``), read back through the PostgreSQL store as the daemon would resume from it;
a second run copies nothing; a running daemon's file is refused."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from watcher.cli_state import add_migrate_state, render_report
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.route import RouteMatch, Target
from watcher.core.silence import SilenceSpec
from watcher.store.errors import StateStoreError
from watcher.store.postgres import PostgresStore, open_postgres
from watcher.store.postgres.from_sqlite import copy_from_sqlite
from watcher.store.records import LiveItem, SinkHealthRecord
from watcher.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from tests.pg import PgServer

pytest_plugins = ["tests.pg"]

FN = FunctionRef(Api.FC2, "fn", "svc", "LATEST")
FC3 = FunctionRef(Api.FC3, "transcode")


async def _single_host_state(path: Path) -> None:
    """A state with something in every table: three invocations committed to two sinks, rows
    sent, retried, dead-lettered and pending, live ids (one untracked), watermarks, a sink's
    health and a silence."""
    store = await SqliteStore.open(path)
    for n, status in enumerate(("Failed", "Succeeded", "Running")):
        ref = InvocationRef(FN, f"job-{n}")
        body = {"status": status, "alreadyRetriedTimes": n, "events": [{"eventId": 1}]}
        result = decide.diff(None, Invocation.model_validate(body), ref=ref, observed_ms=1000 + n)
        routes = {
            t.id: [Target("log"), Target("hook", "critical", "t")] for t in result.transitions
        }
        await store.commit(
            ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=1000 + n
        )
    hook = await store.pending("hook", 100)
    await store.mark_sent([row.seq for row in hook[:2]], 2000)
    await store.mark_dead([hook[2].seq], 2100, "HTTP 410")
    await store.mark_retry([hook[3].seq], 9000, "HTTP 500")
    await store.mark_retry([hook[3].seq], 9500, "refused", own_failure=False)
    await store.track_live([LiveItem(InvocationRef(FC3, "t-1"), {"team": "media"})], 3000)
    await store.track_live([LiveItem(InvocationRef(FC3, "t-2"))], 3000)
    await store.untrack_live([InvocationRef(FC3, "t-2")], 3100)
    await store.save_watermark("watch[0]", 7000, now_ms=3000)
    await store.save_sink_health(SinkHealthRecord("hook", False, 2500, 2000, "HTTP 503"))
    match = RouteMatch.model_validate({"function": "fn"})
    await store.add_silence(SilenceSpec(match, 1000, 10**13, "deploy", "ops"), now_ms=1000)
    await store.close()


async def _everything(store: SqliteStore | PostgresStore) -> dict[str, Any]:
    """What a daemon resumes from, as the store hands it out."""
    pending = {sink: await store.pending(sink, 100) for sink in ("log", "hook")}
    return {
        "snapshots": await store.load_snapshots(),
        "rows": [(r.key, r.last_polled_ms) for r in await store.invocation_rows()],
        "transitions": await store.transitions(),
        "counts": await store.outbox_counts(),
        "backlog": await store.outbox_by_sink(),
        "pending": {
            sink: [
                (
                    r.transition_id,
                    r.invocation_key,
                    r.attempts,
                    r.row_failures,
                    r.next_attempt_ms,
                    r.created_ms,
                    r.severity,
                    r.template,
                )
                for r in rows
            ]
            for sink, rows in pending.items()
        },
        "dead": [
            (d.sink, d.transition_id, d.attempts, d.last_error, d.dead_ms, d.type)
            for d in await store.dead_letters()
        ],
        "live": {
            (c.ref.key, c.tracked, tuple(c.labels.items()))
            for c in (await store.live_changes(0))[1]
        },
        "watermarks": await store.load_watermarks(),
        "sink_health": await store.sink_health(),
        "silences": await store.list_silences(ended_after_ms=0),
    }


async def test_copies_everything_and_a_second_run_copies_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """Every table arrives as the SQLite store handed it out (pending rows in order, with their
    attempts; dead letters; live ids and their removals' absence); the report counts each
    table; run again, nothing is new and nothing changes."""
    source = tmp_path / "state.db"
    await _single_host_state(source)
    sqlite_store = await SqliteStore.open(source, readonly=True)
    expected = await _everything(sqlite_store)
    await sqlite_store.close()

    report = await copy_from_sqlite(source, pg_url)

    assert report.read == {
        "invocations": 3,
        "transitions": 6,
        "outbox": 12,
        "live ids": 2,
        "watermarks": 1,
        "sink health": 1,
        "silences": 1,
    }
    assert report.new == report.read
    assert report.new_outbox == {"pending": 9, "sent": 2, "dead": 1}
    assert "pwd" not in report.target and report.target.startswith("postgresql://fcw@")
    store = await open_postgres(pg_url)
    try:
        assert await _everything(store) == expected
        rev, _ = await store.live_changes(0)
        await store.track_live([LiveItem(InvocationRef(FC3, "t-3"))], 4000)
        assert (await store.live_changes(rev))[0] > rev  # the counter moved past the copies
    finally:
        await store.close()

    again = await copy_from_sqlite(source, pg_url)
    assert again.read == report.read and again.total_new == 0 and again.new_outbox == {}
    assert render_report(again).endswith("0 new rows: everything was there already")
    store = await open_postgres(pg_url)
    try:
        after = await _everything(store)
        assert after["transitions"] == expected["transitions"]
        assert after["counts"] == expected["counts"]
    finally:
        await store.close()


async def test_a_running_daemons_file_is_refused(tmp_path: Path, pg_url: str) -> None:
    """The SQLite file's lock is held (its daemon runs): one line, nothing copied."""
    source = tmp_path / "state.db"
    await _single_host_state(source)
    daemon = await SqliteStore.open(source)
    try:
        with pytest.raises(StateStoreError, match="in use by a running fc-watcher; stop it"):
            await copy_from_sqlite(source, pg_url)
    finally:
        await daemon.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('transitions')") is None
    finally:
        await conn.close()
    with pytest.raises(StateStoreError, match="does not exist"):
        await copy_from_sqlite(tmp_path / "missing.db", pg_url)


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_migrate_state(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def _config(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "watcher.yaml"
    text = f"""
        fc: {{account_id: "1234567890123456", region: cn-hangzhou, access_key_id: k,
             access_key_secret: s}}
        state: {state}
        watch: [{{service: s, function: f, invocations: [a]}}]
    """
    path.write_text(textwrap.dedent(text))
    return path


async def test_the_command_prints_what_it_copied(
    tmp_path: Path, pg_url: str, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``migrate-state -c FILE --from PATH`` copies into the config's state.url (password from
    state.password_file here), prints each table and the total, then "0 new rows"; the
    password is printed nowhere."""
    source = tmp_path / "state.db"
    await _single_host_state(source)
    password_file = tmp_path / "pg-password"  # the loader reads it into state.password
    password_file.write_text(pg_server.password + "\n")
    bare = pg_url.replace(f":{pg_server.password}@", "@")
    config = _config(
        tmp_path,
        f"{{url: '{bare}', password_file: {password_file}}}",
    )
    assert (
        await _in_thread(_run_cli, "migrate-state", "-c", str(config), "--from", str(source)) == 0
    )
    first = capsys.readouterr().out
    assert f"copied {source} into {bare}:" in first
    assert "transitions        6 new of 6" in first
    assert "outbox            12 new of 12 (1 dead, 9 pending, 2 sent)" in first
    assert first.rstrip().endswith("26 new rows")
    assert (
        await _in_thread(_run_cli, "migrate-state", "-c", str(config), "--from", str(source)) == 0
    )
    second = capsys.readouterr().out
    assert "0 new rows: everything was there already" in second
    assert pg_server.password not in first + second


async def _in_thread(function: Any, *args: str) -> int:
    """The command runs its own event loop (``asyncio.run``): off this test's loop."""
    import asyncio

    result: int = await asyncio.to_thread(function, *args)
    return result
