"""A replica paused (SIGSTOP) past its lease while its invocations keep changing: another
replica takes its slots and does its work; resumed (SIGCONT) with polls in flight and stale
fences into a changed world, it commits nothing for a slot it does not hold again, and no
webhook-id is ever delivered with two different contents.

Who committed a transition is its ``committed_by``; when, PostgreSQL's own commit timestamp
(``track_commit_timestamp``, the database's clock, which the leases are kept by too); who held
which slot when, a history the test keeps with a trigger on ``slots`` (owner or epoch changed).
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import EmulatorFactory, Receiver, RunningEmulator
from tests.integration.daemon import Progress
from tests.reliability.test_replicas_chaos import (
    DB_NOW,
    READY_S,
    Replicas,
    State,
    delivered,
    equal_to,
    expected,
    replica_config,
    scripted,
    tally,
    wait_for,
)
from watcher.core.slots import function_key, slot_of
from watcher.store.postgres import open_postgres

if TYPE_CHECKING:
    from tests.pg import PgServer

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.pg"]

LEASE_S = 1.0
SEEN = (0, 1, 3, 4)
"""The script's times the replicas see: t=2 passes while one of them is paused (and the other
has not yet taken its slots), so nobody sees it."""
LATENCY_MS = 150
"""Added to every FC request, so that the paused replica has polls in flight."""

_HISTORY = f"""
CREATE TABLE slot_history (slot INTEGER, owner TEXT, epoch BIGINT, at_ms BIGINT);
CREATE FUNCTION slot_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO slot_history VALUES (NEW.slot, NEW.owner, NEW.epoch, {DB_NOW});
    RETURN NULL;
END $$;
CREATE TRIGGER slot_history AFTER UPDATE ON slots FOR EACH ROW
    WHEN (OLD.owner IS DISTINCT FROM NEW.owner OR OLD.epoch IS DISTINCT FROM NEW.epoch)
    EXECUTE FUNCTION slot_changed();
"""  # noqa: S608 (no input)
_COMMITS = (
    "SELECT id, invocation_key, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000)"
    "::bigint FROM transitions WHERE committed_by = $1"
)


def _with_commit_timestamps(server: PgServer) -> None:
    """Restart ``server`` with ``track_commit_timestamp`` on (it takes a restart)."""
    server.psql("ALTER SYSTEM SET track_commit_timestamp = on")
    server.stop()
    server.start()


def _busy_slots(emu: RunningEmulator) -> set[int]:
    """The slots of the functions that have invocations."""
    return {
        slot_of(function_key("fc2", spec.service, spec.function, spec.qualifier))
        for spec in emu.emulator.app.scenario.invocations
    }


async def _rows(state: State, sql: str, *args: Any) -> list[Any]:
    answer = await wait_for(lambda: state.rows(sql, *args), f"an answer to {sql}", READY_S)
    return list(answer or [])


async def _pause(replicas: Replicas, state: State, paused: str, busy: set[int]) -> dict[str, int]:
    """Wait until ``paused`` holds a slot with work, SIGSTOP it; then (database ms) and the
    end of its slots' lease, and how many slots it held."""

    async def busy_held() -> set[int]:
        return await state.slots_of(paused) & busy

    await wait_for(busy_held, f"a slot with work held by {paused}", READY_S)
    replicas.signal(paused, signal.SIGSTOP)
    [(now_ms, lease_end_ms, slots)] = await _rows(
        state,
        f"SELECT {DB_NOW}, MAX(expires_ms), COUNT(*) FROM slots WHERE owner = $1",  # noqa: S608
        paused,
    )
    return {"paused_ms": int(now_ms), "lease_end_ms": int(lease_end_ms), "slots": int(slots)}


def unheld_commits(
    commits: list[tuple[str, str, int | None]],
    history: list[tuple[int, str | None, int]],
    replica: str,
    paused: dict[str, int],
) -> list[tuple[str, int, int]]:
    """(transition id, slot, commit ms) of each commit of ``replica`` after its lease ended
    for a slot it had not taken again since the pause (by ``history``: slot, owner, when)."""
    bad = []
    for transition_id, key, committed_ms in commits:
        if committed_ms is None or committed_ms <= paused["lease_end_ms"]:
            continue
        slot = slot_of(key.rsplit("/", 1)[0])
        before = [(at, owner) for s, owner, at in history if s == slot and at <= committed_ms]
        at, owner = max(before, default=(0, None))
        if owner != replica or at <= paused["paused_ms"]:
            bad.append((transition_id, slot, committed_ms))
    return bad


def _two_contents(receiver: Receiver) -> int:
    """Webhook-ids delivered with two different contents."""
    contents: dict[str, set[str]] = defaultdict(set)
    for webhook_id, data in delivered(receiver):
        contents[webhook_id].add(repr(sorted(data.items())))
    return sum(1 for seen in contents.values() if len(seen) > 1)


async def _run(
    replicas: Replicas, state: State, emu: RunningEmulator
) -> tuple[str, dict[str, int]]:
    """Two replicas; pause one past its lease while the script moves on, resume it into a
    changed world, let both finish. The paused one, and what ``_pause`` says."""
    _, progress = expected(emu, SEEN)
    await (await open_postgres(state.url)).close()  # the schema, migrated as a replica would
    await state.execute(_HISTORY)
    paused = await replicas.start()
    await replicas.started(paused)
    await replicas.started(await replicas.start())
    await wait_for(state.committed, "the state of t=0", 60, equal_to(progress[0]))
    emu.clock.advance(1)
    await wait_for(state.committed, "the state of t=1", 60, equal_to(progress[1]))
    held = await _pause(replicas, state, paused, _busy_slots(emu))
    try:
        await _after_pause(replicas, state, emu, paused, progress)
    except AssertionError as exc:
        said = str(exc) if "heartbeat ages" in str(exc) else f"{exc}; {await state.stuck()}"
        said += f"; processes: {replicas.states()}"
        raise AssertionError(said) from None
    return paused, held


async def _after_pause(
    replicas: Replicas, state: State, emu: RunningEmulator, paused: str, progress: list[Progress]
) -> None:
    """Move the script on past the pause, resume the paused one, wait until all is done."""
    emu.clock.advance(2)
    await wait_for(state.committed, "the state of t=3 by the other", 60, equal_to(progress[2]))

    async def none_left() -> bool:
        return not await state.slots_of(paused) and await state.slot_owners() is not None

    await wait_for(none_left, f"{paused}'s slots expired or taken", READY_S)
    emu.clock.advance(1)
    replicas.signal(paused, signal.SIGCONT)

    async def back() -> set[int]:
        return await state.slots_of(paused)

    await wait_for(back, f"a slot held by {paused} again after SIGCONT", READY_S)
    await wait_for(state.committed, "the state of t=4", 60, equal_to(progress[3]))
    await state.drained(60)


@pytest.mark.timeout(240)
async def test_a_paused_replica_commits_nothing_for_the_slots_it_lost(
    own_pg_server: PgServer,
    new_pg_database: Callable[[PgServer], Awaitable[str]],
    start_emulator: EmulatorFactory,
    receiver: Receiver,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    """Every transition the paused replica committed after its lease ended is in a slot it
    had taken again; every webhook-id one content; nothing lost, nothing invented."""
    await asyncio.to_thread(_with_commit_timestamps, own_pg_server)
    emu = await start_emulator(
        invocations=scripted(), faults=[{"kind": "latency", "latency_ms": LATENCY_MS}]
    )
    facts, _ = expected(emu, SEEN)
    url = await new_pg_database(own_pg_server)
    config = replica_config(tmp_path, emu, url, receiver.url + "/hook", lease_s=LEASE_S)
    replicas, state = Replicas(config, tmp_path), State(url)
    try:
        paused, held = await _run(replicas, state, emu)
        codes = await replicas.stop_all()
        commits = [(r[0], r[1], r[2]) for r in await _rows(state, _COMMITS, paused)]
        history = [(r[0], r[1], r[3]) for r in await _rows(state, "SELECT * FROM slot_history")]
    finally:
        await replicas.kill_all()
        await state.close()
    late = [c for c in commits if c[2] is not None and c[2] > held["lease_end_ms"]]
    bad = unheld_commits(commits, history, paused, held)
    counts = tally(delivered(receiver), facts)
    log = replicas.log_of(paused).read_text()
    report(
        f"paused={paused} held_slots={held['slots']} its_commits={len(commits)} "
        f"after_lease_end={len(late)} without_the_slot={len(bad)} "
        f"fenced_log_lines={log.lower().count('fenced')} ids_with_two_contents="
        f"{_two_contents(receiver)} " + " ".join(f"{k}={v}" for k, v in counts.items())
    )
    assert set(codes.values()) == {0}, codes
    assert bad == [], f"{paused} committed for slots it no longer held: {bad}"
    assert _two_contents(receiver) == 0
    assert counts["lost"] == counts["invented"] == 0, counts
    assert counts["id_for_two_facts"] == counts["fact_under_two_ids"] == 0, counts
