"""Shared fixtures: a running emulator on 127.0.0.1 with a manual clock, and client factories."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from watcher.config.models import Config
from watcher.devtools.emulator import Emulator, ManualClock, Scenario
from watcher.fc.client import FcClient
from watcher.fc.credentials import Credentials, StaticCredentialSource
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.signing import SignatureScheme

ACCESS_KEY_ID = "LTAI_TEST_KEY_ID_0001"
ACCESS_KEY_SECRET = "test-secret-never-printed-9f8e7d"
STS_KEY_ID = "STS.TEST_TEMP_KEY_ID"
STS_SECRET = "sts-secret-never-printed-1a2b3c"
STS_TOKEN = "sts-token-never-printed-4d5e6f"


def make_scenario(**overrides: Any) -> Scenario:
    """A scenario that accepts the test keys; ``overrides`` replace top-level fields."""
    document: dict[str, Any] = {
        "credentials": [
            {"access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET},
            {
                "access_key_id": STS_KEY_ID,
                "access_key_secret": STS_SECRET,
                "security_token": STS_TOKEN,
            },
        ],
    }
    document.update(overrides)
    return Scenario.model_validate(document)


class RunningEmulator:
    """An emulator started for one test, with its manual clock."""

    def __init__(self, emulator: Emulator, clock: ManualClock) -> None:
        self.emulator = emulator
        self.clock = clock

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.emulator.app.stats)


EmulatorFactory = Callable[..., Any]


@pytest.fixture
async def start_emulator() -> AsyncIterator[EmulatorFactory]:
    """Start emulators on port 0; every one started is stopped after the test."""
    started: list[Emulator] = []

    async def start(scenario: Scenario | None = None, **overrides: Any) -> RunningEmulator:
        clock = ManualClock()
        emulator = Emulator(scenario or make_scenario(**overrides), clock=clock)
        await emulator.start()
        started.append(emulator)
        return RunningEmulator(emulator, clock)

    yield start
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A real aiohttp session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


def make_client(
    session: aiohttp.ClientSession,
    url: str,
    *,
    scheme: SignatureScheme = SignatureScheme.ACS3,
    credentials: Credentials | None = None,
    **kwargs: Any,
) -> FcClient:
    """A client for the emulator at ``url``, signing with the test key unless told otherwise."""
    return FcClient(
        session,
        endpoint=resolve_endpoint("1234567890123456", "cn-hangzhou", url=url),
        account_id="1234567890123456",
        credentials=StaticCredentialSource(
            credentials or Credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET)
        ),
        scheme=scheme,
        **kwargs,
    )


def emulator_fc(url: str) -> dict[str, Any]:
    """The ``fc`` section of a watcher config for the emulator at ``url``, with the test key."""
    return {
        "account_id": "1234567890123456",
        "region": "cn-hangzhou",
        "endpoint": url,
        "access_key_id": ACCESS_KEY_ID,
        "access_key_secret": ACCESS_KEY_SECRET,
    }


def emulator_config(url: str, state: Path, **sections: Any) -> Config:
    """A watcher config for the emulator at ``url`` with the test key; ``sections`` add or
    replace top-level sections (``poll``, ``sinks``, ``routes``...)."""
    return Config.model_validate(
        {
            "fc": emulator_fc(url),
            "state": {"path": state},
            "watch": [{"service": "s", "function": "f", "invocations": ["unused"]}],
            **sections,
        }
    )


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script: list[tuple[int, str, dict[str, str]]] = []
        self.default: tuple[int, str, dict[str, str]] = (200, "ok", {})
        self.delay_s = 0.0
        self.url = ""
        self._runner: Any = None

    def answer(self, *replies: tuple[int, str] | tuple[int, str, dict[str, str]]) -> None:
        """Queue replies for the next requests; afterwards the default answers."""
        for reply in replies:
            status, body, *rest = reply
            self.script.append((status, body, rest[0] if rest else {}))

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        self.requests.append((str(request.rel_url), dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, text, headers = self.script.pop(0) if self.script else self.default
        return web.Response(status=status, text=text, headers=headers)

    async def start(self, port: int = 0) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def json_bodies(self) -> list[Any]:
        return [json.loads(body) for _, _, body in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A started receiver, stopped after the test."""
    started = Receiver()
    await started.start()
    yield started
    await started.stop()


pytest_plugins = ["tests.programs", "tests.pg"]

_REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a line of what a reliability test counted; printed at the end of the run."""
    lines = request.config.stash.setdefault(_REPORT_KEY, [])

    def add(line: str) -> None:
        lines.append(f"{request.node.name}: {line}")

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORT_KEY, [])
    if lines:
        terminalreporter.section("what the reliability tests counted")
        for line in lines:
            terminalreporter.write_line(line)
