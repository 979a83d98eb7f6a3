"""Shared fixtures: a running emulator on 127.0.0.1 with a manual clock, and client factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from watcher.emulator import Emulator, ManualClock, Scenario
from watcher.fc.client import FcClient, SignatureScheme, resolve_endpoint
from watcher.fc.credentials import Credentials, StaticCredentialSource

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
