"""The demo: start the emulator on the bundled scenario and poll each invocation once.

It uses the same client, signing and parsing as the daemon, against the emulator on 127.0.0.1,
so it needs no cloud account and reaches nothing outside this machine.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import aiohttp

from watcher.emulator import Emulator, ManualClock, load_scenario
from watcher.fc.client import FcClient, resolve_endpoint
from watcher.fc.credentials import Credentials, StaticCredentialSource
from watcher.fc.errors import FcError
from watcher.fc.models import FunctionRef, InvocationRef

DEMO_ELAPSED_S = 30.0  # far enough into the scenario that every timeline has played out


def bundled_scenario_path() -> Path:
    """The scenario file shipped inside the package."""
    return Path(str(resources.files("watcher.demo").joinpath("scenario.yaml")))


async def run_demo(*, log_format: str = "auto") -> int:
    """Poll every invocation of the bundled scenario once and print what was parsed."""
    scenario = load_scenario(bundled_scenario_path())
    clock = ManualClock()
    key = scenario.credentials[0]
    credentials = StaticCredentialSource(Credentials(key.access_key_id, key.access_key_secret))
    async with Emulator(scenario, clock=clock) as emulator, aiohttp.ClientSession() as session:
        client = FcClient(
            session,
            endpoint=resolve_endpoint(scenario.account_id, scenario.region, url=emulator.url),
            account_id=scenario.account_id,
            credentials=credentials,
        )
        print(f"emulator on {emulator.url}; scenario time advanced to {DEMO_ELAPSED_S:g} s\n")
        clock.advance(DEMO_ELAPSED_S)
        for spec in scenario.invocations:
            ref = InvocationRef(
                FunctionRef(spec.api, spec.function, spec.service, spec.qualifier), spec.id
            )
            try:
                invocation = await client.get_invocation(ref)
            except FcError as exc:
                print(f"{spec.id:<24} {type(exc).__name__}: {exc}")
                continue
            trail = " > ".join(event.status for event in invocation.events)
            print(
                f"{spec.id:<24} {invocation.status:<10} retries={invocation.already_retried_times}"
                f"  events: {trail}"
            )
            if invocation.error_message:
                print(f"{'':<24} error: {invocation.error_message}")
    return 0
