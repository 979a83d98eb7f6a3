"""Emulator scenarios for the benchmark: N invocations of one function, listed one by one, and
the discovery benchmark's tens of thousands over several functions, made by ``generators``."""

from __future__ import annotations

from typing import Any

from watcher.devtools.emulator.generators import (
    GeneratorSpec,
    GenInvocation,
    expand,
    generated_ids,
)

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


def discovery_functions(functions: int) -> list[str]:
    """The functions of the discovery benchmark, in the order their generators come."""
    return [f"bench-fn-{n:02d}" for n in range(functions)]


def discovery_scenario(
    *, functions: int, per_function: int, interval_s: float, change_share: float
) -> dict[str, Any]:
    """``functions`` x ``per_function`` invocations, all Running at the start, of which
    ``change_share`` change every ``interval_s``, at an even pace, for the first
    ``interval_s / change_share`` seconds (1,000 s for 1% a 10 s cycle).

    Two generators a function, half the invocations each, starting evenly over that span before
    scenario time 0 (spread as a real workload's are, so a scan for new ones lists one page, not
    them all): the first half finish one after another (90% Succeeded, 10% Failed), which a
    scan sees as gone from the active Lists; the second half go Retrying one after another (back
    to Running only after the span), which a scan sees changed in place. Each generator's
    changes are offset by its own fraction of a step, so that all of them together come evenly
    (not at the same instants, which a scan's phase would make all early or all late), and none
    at scenario time 0.
    """
    span_s = interval_s / change_share
    generators = []
    for n, function in enumerate(discovery_functions(functions)):
        finishing, retrying = per_function - per_function // 2, per_function // 2
        phase = (2 * n + 0.5) / (2 * functions)
        generators.append(_generator(function, "done-", finishing, span_s, phase))
        phase += 1 / (2 * functions)
        generators.append(_generator(function, "retry-", retrying, span_s, phase, retries=1))
    return {
        "account_id": ACCOUNT_ID,
        "credentials": [{"access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET}],
        "generators": [g for g in generators if g["count"]],
    }


def _generator(
    function: str, prefix: str, count: int, span_s: float, phase: float, retries: int = 0
) -> dict[str, Any]:
    every_s = span_s / max(count, 1)
    # Without retries the outcome comes at the end of run_s; with one, Retrying comes at a
    # quarter of it (``generators._Draw``): either way at begin + span + ``phase`` of a step.
    run_s = span_s + every_s * phase
    return {
        "service": SERVICE,
        "function": function,
        "prefix": prefix,
        "count": count,
        "start_s": -span_s,
        "every_s": every_s,
        "run_s": run_s * (4 if retries else 1),
        "retries": retries,
        "outcomes": {"Succeeded": 0.9, "Failed": 0.1} if not retries else {"Succeeded": 1.0},
    }


def generated(scenario: dict[str, Any]) -> list[GenInvocation]:
    """The invocations ``scenario``'s generators make, exactly as the emulator makes them (the
    same seed and positions): what the benchmark expects to change, and when."""
    seed = int(scenario.get("seed", 0))
    return [
        invocation
        for index, spec in enumerate(scenario.get("generators", ()))
        for invocation in expand(GeneratorSpec.model_validate(spec), seed=seed, index=index)
    ]


def generated_ids_by_function(scenario: dict[str, Any]) -> dict[str, list[str]]:
    """The ids ``scenario``'s generators make, by function, without their timelines: what a
    config lists, for a fraction of what expanding them all would hold in memory."""
    ids: dict[str, list[str]] = {}
    for spec in scenario.get("generators", ()):
        generator = GeneratorSpec.model_validate(spec)
        ids.setdefault(generator.function, []).extend(generated_ids(generator))
    return ids
