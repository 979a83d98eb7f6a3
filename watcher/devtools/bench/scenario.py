"""Emulator scenarios for the benchmark, generated: N invocations of one function."""

from __future__ import annotations

from typing import Any

ACCOUNT_ID = "1234567890123456"
ACCESS_KEY_ID = "LTAI_BENCH_KEY"
# The benchmark's own emulator key: it opens nothing anywhere else.
ACCESS_KEY_SECRET = "bench-secret-0123456789"  # noqa: S105
SERVICE = "bench-service"
FUNCTION = "bench-function"


def steady_scenario(invocations: int, latency_ms: int = 0) -> dict[str, Any]:
    """Every invocation Running with one event, never changing: the unchanged-poll path."""
    scenario: dict[str, Any] = {
        "account_id": ACCOUNT_ID,
        "credentials": [{"access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET}],
        "invocations": [
            {
                "id": f"bench-{n:06d}",
                "service": SERVICE,
                "function": FUNCTION,
                "qualifier": "LATEST",
                "payload": f'{{"input": "oss://bench/in/{n:06d}.mp4"}}',
                "timeline": [{"at_s": 0, "status": "Running"}],
            }
            for n in range(invocations)
        ],
    }
    if latency_ms:
        scenario["faults"] = [{"kind": "latency", "latency_ms": latency_ms}]
    return scenario


def changing_scenario(invocations: int, first_change_s: float, spacing_s: float) -> dict[str, Any]:
    """Invocations that fail one after another, for the change-to-delivery latency."""
    scenario = steady_scenario(invocations)
    for n, spec in enumerate(scenario["invocations"]):
        spec["timeline"].append(
            {"at_s": first_change_s + n * spacing_s, "status": "Failed", "error": "bench"}
        )
    return scenario
