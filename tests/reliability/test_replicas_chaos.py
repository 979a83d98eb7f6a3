"""Three replicas share one PostgreSQL through a scripted 300-transition run while a random
one of them is SIGKILLed (and restarted) at least 15 times and PostgreSQL itself is restarted
once: every transition reaches the verifying receiver under one webhook-id, none is invented,
and each time the killed replica's slots are held by others within 2 x lease_s and a heartbeat.

The 30 invocations are spread over ten functions, three each, so that their hash slots spread
over the replicas. Every replica process runs with an id of its own (a restarted one with a new
id, as a new host would), so the ``slots`` table says whose each slot is. ``test_replicas_fencing``
uses the machinery here: the cluster of replicas, the state read back from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import EmulatorFactory, Receiver, RunningEmulator, emulator_fc
from tests.integration.daemon import Progress, read_log, run_cli, stop
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.devtools.emulator.scenario import state_at
from watcher.fc.models import parse_invocation

if TYPE_CHECKING:
    from tests.pg import PgServer

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.pg"]

LEASE_S = 2.0
HEARTBEAT_S = LEASE_S / 3
TAKEOVER_BOUND_S = 2 * LEASE_S + HEARTBEAT_S
SERVICE = "demo-service"
FUNCTIONS = tuple(f"fn-{n:02d}" for n in range(10))
STEPS = ("Enqueued", "Running", "Retrying", "Running", "Succeeded")
TIMES = tuple(range(len(STEPS)))
KILLS_PER_STEP = 3
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DB_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
"""The database's clock in epoch ms, as the leases are kept (``watcher.store.postgres.leases``)."""
READY_S = 30.0
"""The longest wait for a replica to start, or to be given a slot."""

T = TypeVar("T")
Fact = tuple[Any, ...]
"""What a transition says: invocation id, type, previous status, status, eventId."""


# -- the run: script, expectation, config ------------------------------------------------------


def scripted(count: int = 30) -> list[dict[str, Any]]:
    """``count`` invocations over ``FUNCTIONS``; each goes through ``STEPS`` one a second (a
    third fail at the end): 10 transitions each."""
    return [
        {
            "id": f"job-{n:02d}",
            "service": SERVICE,
            "function": FUNCTIONS[n % len(FUNCTIONS)],
            "timeline": [
                {"at_s": t, "status": "Failed" if (n % 3 == 0 and t == 4) else status}
                for t, status in enumerate(STEPS)
            ],
        }
        for n in range(count)
    ]


def expected(
    emu: RunningEmulator, times: tuple[int, ...]
) -> tuple[dict[str, Fact], list[Progress]]:
    """What the replicas together must emit when they see every invocation at each of
    ``times``, by diffing the emulator's own bodies: the facts by transition id, and per time
    the (status, event high-water) each invocation must reach."""
    app = emu.emulator.app
    facts: dict[str, Fact] = {}
    snapshots: dict[str, Any] = {}
    progress: list[Progress] = []
    for t in times:
        reached: Progress = {}
        for spec in app.scenario.invocations:
            function = FunctionRef(Api.FC2, spec.function, spec.service, spec.qualifier)
            body = state_at(spec, t, epoch_ms=app.epoch_ms, account_id="1", region="r")
            if body is None:
                continue
            parsed = parse_invocation(json.dumps(body).encode())
            ref = InvocationRef(function, spec.id)
            result = decide.diff(snapshots.get(spec.id), parsed, ref=ref, observed_ms=0)
            snapshots[spec.id] = result.snapshot
            reached[spec.id] = (result.snapshot.status, result.snapshot.event_high_water)
            for transition in result.transitions:
                event_id = transition.event.event_id if transition.event else None
                kind = transition.type.value
                facts[transition.id] = (spec.id, kind, transition.previous_status,
                                        transition.status, event_id)  # fmt: skip
        progress.append(reached)
    return facts, progress


def replica_config(
    tmp_path: Path, emu: RunningEmulator, state_url: str, hook_url: str, lease_s: float = LEASE_S
) -> Path:
    """One config for every replica: the state in PostgreSQL, the replica's id from its
    environment (``FCW_REPLICA_ID``), every transition to one signed, fast-retrying webhook."""
    by_function: dict[str, list[str]] = defaultdict(list)
    for spec in emu.emulator.app.scenario.invocations:
        by_function[spec.function].append(spec.id)
    config = {
        "fc": emulator_fc(emu.url),
        "state": {"url": state_url, "lease_s": lease_s, "replica_id": "${FCW_REPLICA_ID}"},
        "poll": {"interval_s": 0.05, "max_interval_s": 0.1, "jitter": 0.1, "backoff_base_s": 0.05},
        "watch": [
            {"service": SERVICE, "function": function, "qualifier": "LATEST", "invocations": ids}
            for function, ids in sorted(by_function.items())
        ],
        "sinks": [
            {
                "name": "hook",
                "type": "webhook",
                "url": hook_url,
                "secret": WHSEC,
                "backoff_base_s": 0.05,
                "backoff_cap_s": 0.5,
            }
        ],
        "routes": [{"sinks": ["hook"]}],
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


# -- waiting -------------------------------------------------------------------------------------


async def wait_for(
    probe: Callable[[], Awaitable[T]], what: str, timeout_s: float, ok: Callable[[T], bool] = bool
) -> T:
    """``probe`` again every 20 ms until ``ok`` of its answer; that answer. Past ``timeout_s``
    an AssertionError says what never arrived, and the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never came within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(0.02)


def equal_to(wanted: object) -> Callable[[object], bool]:
    return lambda value: value == wanted


# -- the state, read back from PostgreSQL -----------------------------------------------------


class State:
    """Reads of the replicas' PostgreSQL, over one connection made again after an outage."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record] | None:
        """The rows of ``sql``, or None while the server cannot be reached."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.url, timeout=5)
            return list(await self._conn.fetch(sql, *args, timeout=10))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await self.close()
            return None

    async def execute(self, sql: str) -> None:
        """Run ``sql`` (statements, no parameters) once; fail if the server cannot."""
        await self.rows("SELECT 1")
        assert self._conn is not None, f"PostgreSQL unreachable at {self.url.split('@')[-1]}"
        await self._conn.execute(sql)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def committed(self) -> Progress | None:
        rows = await self.rows("SELECT invocation_id, status, event_high_water FROM invocations")
        return None if rows is None else {r[0]: (r[1], r[2]) for r in rows}

    async def pending(self) -> int | None:
        rows = await self.rows("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        return None if rows is None else int(rows[0][0])

    async def stuck(self) -> str:
        """The pending outbox rows and the slots' holders, for a message."""
        rows = await self.rows(
            "SELECT o.seq, o.slot, o.claimed_by, o.claim_until_ms - "  # noqa: S608
            f"{DB_NOW}, o.attempts, o.next_attempt_ms - {DB_NOW}, o.last_error, s.owner, "
            f"s.expires_ms - {DB_NOW} FROM outbox o JOIN slots s USING (slot) "
            "WHERE o.state = 'pending' ORDER BY o.seq LIMIT 20"
        )
        beats = await self.rows(f"SELECT id, {DB_NOW} - heartbeat_ms FROM replicas")  # noqa: S608
        frozen = await self.rows(
            "SELECT pid, state, (clock_timestamp() - state_change)::text, left(query, 80) "
            "FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
            "AND datname = current_database()"
        )
        return "; ".join(str(tuple(r)) for r in rows or []) + (
            f"; heartbeat ages ms: {[tuple(r) for r in beats or []]}"
            f"; idle in transaction: {[tuple(r) for r in frozen or []]}"
        )

    async def drained(self, timeout_s: float) -> None:
        """Wait for an empty outbox; else fail naming its pending rows."""
        try:
            await wait_for(self.pending, "an empty outbox", timeout_s, equal_to(0))
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: (seq, slot, claimed_by, claim left ms, attempts, next attempt in ms, "
                f"last error, slot owner, lease left ms): {await self.stuck()}"
            ) from None

    async def slot_owners(self) -> dict[int, str | None] | None:
        """Each slot's holder, by the database's clock: None for a slot nobody holds, or
        whose lease ran out."""
        rows = await self.rows(
            f"SELECT slot, CASE WHEN expires_ms > {DB_NOW} THEN owner END FROM slots"  # noqa: S608
        )
        return None if rows is None else {int(r[0]): r[1] for r in rows}

    async def slots_of(self, replica: str) -> set[int]:
        owners = await self.slot_owners() or {}
        return {slot for slot, owner in owners.items() if owner == replica}


# -- the replicas --------------------------------------------------------------------------------


class Replicas:
    """``fc-watcher run`` processes of one config, each with a replica id of its own."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.running: dict[str, asyncio.subprocess.Process] = {}
        self._numbers = itertools.count()

    def log_of(self, replica: str) -> Path:
        return self.logs / f"{replica}.log"

    async def start(self) -> str:
        replica = f"replica-{next(self._numbers):02d}"
        self.running[replica] = await run_cli(
            "run", "-c", str(self.config), stdout=self.log_of(replica),
            env={"FCW_REPLICA_ID": replica},
        )  # fmt: skip
        return replica

    async def started(self, replica: str) -> None:
        """Wait until ``replica`` logged its start; fail if it exited first."""

        async def probe() -> bool:
            process = self.running[replica]
            if process.returncode is not None:
                said = (await process.stderr.read()).decode()[-600:] if process.stderr else ""
                raise AssertionError(f"{replica} exited with {process.returncode}: {said}")
            entries = read_log([self.log_of(replica)])
            return any(e.get("event") == "watcher_started" for e in entries)

        await wait_for(probe, f"{replica}'s watcher_started", READY_S)

    async def kill(self, replica: str) -> float:
        """SIGKILL ``replica``; the monotonic time the signal was sent."""
        process = self.running.pop(replica)
        killed_at = time.monotonic()
        await stop(process, signal.SIGKILL)
        return killed_at

    def states(self) -> dict[str, str]:
        """Each running replica's process state (``/proc``: R, S, T for stopped...)."""
        out = {}
        for name, process in self.running.items():
            status = Path(f"/proc/{process.pid}/status")
            lines = status.read_text().splitlines() if status.exists() else []
            out[name] = next((line for line in lines if line.startswith("State:")), "gone")
        return out

    def signal(self, replica: str, sig: int) -> None:
        self.running[replica].send_signal(sig)

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM every replica at once; their exit codes."""
        running, self.running = self.running, {}
        codes = await asyncio.gather(*(stop(p) for p in running.values()))
        return dict(zip(running, codes, strict=True))

    async def kill_all(self) -> None:
        for replica in list(self.running):
            await self.kill(replica)


async def takeover_s(state: State, victim: str, held: set[int], killed_at: float) -> float:
    """Seconds from ``killed_at`` until every slot of ``held`` is held by another replica."""

    async def probe() -> dict[int, str | None] | None:
        return await state.slot_owners()

    def taken(owners: dict[int, str | None] | None) -> bool:
        return owners is not None and all(owners.get(s) not in (None, victim) for s in held)

    bound = 4 * TAKEOVER_BOUND_S  # the bound itself is asserted on the figure, not here
    await wait_for(probe, f"{len(held)} slots of {victim} held by others", bound, taken)
    return time.monotonic() - killed_at


async def kill_one(replicas: Replicas, state: State, rng: random.Random) -> float:
    """SIGKILL a random replica while it holds slots, start another in its place; the takeover
    time of the killed one's slots."""
    victim = rng.choice(sorted(replicas.running))
    await replicas.started(victim)

    async def holding() -> set[int]:
        return await state.slots_of(victim)

    await wait_for(holding, f"a slot held by {victim}", READY_S)
    await asyncio.sleep(rng.uniform(0, 0.2))  # at a random moment of its polling or delivery
    held = await wait_for(holding, f"a slot held by {victim}", READY_S)
    killed_at = await replicas.kill(victim)
    await replicas.start()
    return await takeover_s(state, victim, held, killed_at)


async def restart_postgres(server: PgServer, state: State, down_s: float) -> None:
    """Stop the server (a fast shutdown: every connection closed), keep it down for
    ``down_s``, start it again on the same port and data."""
    await state.close()
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(server.start)


# -- what the receiver got -----------------------------------------------------------------------


def delivered(receiver: Receiver) -> list[tuple[str, dict[str, Any]]]:
    """(webhook-id, data) of every delivery, in arrival order; each signature verified."""
    out = []
    for _, headers, body in receiver.requests:
        lowered = {k.lower(): v for k, v in headers.items()}
        payload = Webhook(WHSEC).verify(body, lowered)
        assert lowered["webhook-id"] == payload["data"]["id"]
        out.append((lowered["webhook-id"], payload["data"]))
    return out


def fact_of(data: dict[str, Any]) -> Fact:
    event = data.get("event") or {}
    return (data["invocationId"], data["type"], data["previousStatus"], data["status"],
            event.get("eventId"))  # fmt: skip


def tally(deliveries: list[tuple[str, dict[str, Any]]], facts: dict[str, Fact]) -> dict[str, int]:
    """Lost and invented transitions, ids standing for two facts (or for another fact than
    the one expected), facts under two ids, and same-id re-deliveries."""
    facts_of: dict[str, set[Fact]] = defaultdict(set)
    ids_of: dict[Fact, set[str]] = defaultdict(set)
    for webhook_id, data in deliveries:
        facts_of[webhook_id].add(fact_of(data))
        ids_of[fact_of(data)].add(webhook_id)
    return {
        "delivered": len(deliveries),
        "lost": len(set(facts) - set(facts_of)),
        "invented": len(set(facts_of) - set(facts)),
        "id_for_two_facts": sum(
            1 for i, f in facts_of.items() if len(f) > 1 or (i in facts and f != {facts[i]})
        ),
        "fact_under_two_ids": sum(1 for ids in ids_of.values() if len(ids) > 1),
        "redelivered": len(deliveries) - len(facts_of),
    }


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- the test --------------------------------------------------------------------------------------


async def _drive(
    replicas: Replicas, state: State, server: PgServer, emu: RunningEmulator, rng: random.Random
) -> list[float]:
    """Each second of the script: move the emulator on, kill ``KILLS_PER_STEP`` replicas (and
    once restart PostgreSQL), wait for the state the script reaches; the takeover times."""
    _, progress = expected(emu, TIMES)
    takeovers: list[float] = []
    for t, reached in zip(TIMES, progress, strict=True):
        emu.clock.advance(t - emu.clock.elapsed_s())
        if t == 2:
            await restart_postgres(server, state, down_s=LEASE_S)
        for _ in range(KILLS_PER_STEP):
            takeovers.append(await kill_one(replicas, state, rng))
        await wait_for(state.committed, f"the state of t={t}", 90, equal_to(reached))
    await state.drained(60)
    return takeovers


@pytest.mark.timeout(400)
async def test_three_replicas_through_kills_and_a_postgres_restart(
    own_pg_server: PgServer,
    new_pg_database: Callable[[PgServer], Awaitable[str]],
    start_emulator: EmulatorFactory,
    receiver: Receiver,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    """Union of deliveries equals the expected set, each fact under one id; takeovers bound."""
    emu = await start_emulator(invocations=scripted())
    facts, _ = expected(emu, TIMES)
    assert len(facts) == 300
    url = await new_pg_database(own_pg_server)
    replicas = Replicas(replica_config(tmp_path, emu, url, receiver.url + "/hook"), tmp_path)
    state = State(url)
    try:
        for _ in range(3):
            await replicas.start()
        takeovers = await _drive(replicas, state, own_pg_server, emu, random.Random(13))
        codes = await replicas.stop_all()
    finally:
        await replicas.kill_all()
        await state.close()
    counts = tally(delivered(receiver), facts)
    report(
        f"replicas=3 kills={len(takeovers)} pg_restarts=1 expected={len(facts)} "
        + " ".join(f"{k}={v}" for k, v in counts.items())
        + f" takeover_s p50={statistics.median(takeovers):.2f} "
        f"p99={percentile(takeovers, 0.99):.2f} max={max(takeovers):.2f} "
        f"(bound {TAKEOVER_BOUND_S:.2f}, lease_s={LEASE_S})"
    )
    assert set(codes.values()) == {0}, codes
    assert len(takeovers) >= 15
    assert counts["lost"] == counts["invented"] == 0, counts
    assert counts["id_for_two_facts"] == counts["fact_under_two_ids"] == 0, counts
    assert max(takeovers) < TAKEOVER_BOUND_S, sorted(takeovers)
