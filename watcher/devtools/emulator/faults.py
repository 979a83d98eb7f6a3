"""Which injected faults apply to a request. Pure: the random source is passed in and seeded."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from watcher.devtools.emulator.scenario import FaultSpec


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to do to one request: delay it, and at most one failure."""

    latency_ms: int
    failure: FaultSpec | None


def _applies(
    fault: FaultSpec, elapsed_s: float, request_number: int, target: str, rng: random.Random
) -> bool:
    if fault.from_s is not None and elapsed_s < fault.from_s:
        return False
    if fault.until_s is not None and elapsed_s >= fault.until_s:
        return False
    if not fnmatchcase(target, fault.match):
        return False
    if fault.every_nth is not None and request_number % fault.every_nth != 0:
        return False
    return fault.probability >= 1.0 or rng.random() < fault.probability


def plan_faults(
    faults: Sequence[FaultSpec],
    *,
    elapsed_s: float,
    request_number: int,
    target: str,
    rng: random.Random,
) -> FaultPlan:
    """Decide the faults for request number ``request_number`` (1-based) aimed at ``target``.

    ``target`` is the invocation id, or ``""`` for a List call. Latencies add up; the first
    failing fault that fires wins.
    """
    latency_ms = 0
    failure: FaultSpec | None = None
    for fault in faults:
        if fault.kind == "latency":
            if _applies(fault, elapsed_s, request_number, target, rng):
                latency_ms += fault.latency_ms
        elif failure is None and _applies(fault, elapsed_s, request_number, target, rng):
            failure = fault
    return FaultPlan(latency_ms, failure)
