"""Scenario generators: thousands of invocations from one stanza, for discovery and the benchmark.

A generator makes ``count`` invocations of one function, ids ``prefix`` + a zero-padded number,
starting ``every_s`` apart from ``start_s``. Each runs Enqueued -> Running -> (Retrying ->
Running)* -> its outcome, drawn by weight; run time and retries are numbers or ``[min, max]``
ranges drawn uniformly. Everything random comes from the scenario's ``seed`` and the generator's
position, so a scenario always expands to the same invocations.

The expansion makes plain records (``GenInvocation``, ``GenStep``), not pydantic models: building
100,000 ``InvocationSpec`` models takes seconds, these take a fraction of one. ``timeline``
serves both alike. This module must not import ``scenario`` (which imports it).

"1 % of them change per 10 s": changes are finishes, so spread the finish times over
10 s / 1 % = 1,000 s: ``start_s: -60, run_s: [60, 1060]`` (random), or ``start_s: -1000,
every_s: 1, run_s: 1000`` (one a second, exactly, per generator of 1,000).
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watcher.core.invocation import IDENTIFIER_PATTERN, TERMINAL_STATUSES, Api

OUTCOMES = TERMINAL_STATUSES | {"Running"}
"""What a generated invocation ends as; ``Running`` never finishes (unless stopped)."""

Span = float | tuple[float, float]
Count = int | tuple[int, int]


class GenStep(NamedTuple):
    """A timeline step, as ``scenario.Step`` has it, without validation."""

    at_s: float
    status: str
    error: str | None = None
    detail: str | None = None
    return_payload: str | None = None
    event: bool = True


@dataclass(frozen=True, slots=True)
class GenInvocation:
    """A generated invocation, field for field what ``timeline.state_at`` reads."""

    id: str
    api: Api
    service: str | None
    function: str
    qualifier: str
    payload: str
    appears_at_s: float | None
    timeline: tuple[GenStep, ...]
    request_id: str = ""
    instance_id: str = ""
    destination_status: str = ""


class GeneratorSpec(BaseModel):
    """One generator stanza of a scenario."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api: Api = Api.FC2
    service: str | None = None
    """Required for ``fc2``, refused for ``fc3``."""
    function: str
    qualifier: str = "LATEST"
    prefix: str = "job-"
    id_start: int = Field(0, ge=0)
    count: int = Field(ge=0, le=1_000_000)
    start_s: float = 0.0
    """Scenario time of the first start; negative = before the emulator started."""
    every_s: float = Field(0.0, ge=0)
    queue_s: Span = 0.0
    """Enqueued for this long before Running."""
    run_s: Span = 30.0
    """From Running to the outcome, retries included (to Expired/Invalid: from Enqueued)."""
    outcomes: dict[str, float] = Field(default_factory=lambda: {"Succeeded": 1.0})
    retries: Count = 0
    error: str = "generated failure"
    payload: str = ""
    """``{n}`` becomes the invocation's number."""
    return_payload: str = ""

    @field_validator("function", "qualifier")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if IDENTIFIER_PATTERN.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a valid FC identifier")
        return value

    @field_validator("queue_s", "run_s", "retries")
    @classmethod
    def _range(cls, value: Span) -> Span:
        low, high = value if isinstance(value, tuple) else (value, value)
        if not 0 <= low <= high:
            raise ValueError("must be >= 0, or [min, max] with 0 <= min <= max")
        return value

    @field_validator("outcomes")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcome(s) {unknown}: use {sorted(OUTCOMES)}")
        if any(weight < 0 for weight in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all 0")
        return value

    @model_validator(mode="after")
    def _names(self) -> GeneratorSpec:
        if (self.api is Api.FC2) != (self.service is not None):
            raise ValueError("fc2 generators need a service; fc3 generators take none")
        if self.service is not None and IDENTIFIER_PATTERN.fullmatch(self.service) is None:
            raise ValueError(f"{self.service!r} is not a valid FC identifier")
        last = _id(self.prefix, self.id_start + max(self.count - 1, 0), _width(self))
        if IDENTIFIER_PATTERN.fullmatch(last) is None:
            raise ValueError(f"prefix {self.prefix!r} makes invalid ids (such as {last!r})")
        return self


def _width(generator: GeneratorSpec) -> int:
    return max(6, len(str(generator.id_start + generator.count - 1)))


def _id(prefix: str, number: int, width: int) -> str:
    return f"{prefix}{number:0{width}d}"


def generated_ids(generator: GeneratorSpec) -> Iterator[str]:
    """The ids ``generator`` makes, in order."""
    width = _width(generator)
    for number in range(generator.id_start, generator.id_start + generator.count):
        yield _id(generator.prefix, number, width)


def expand(generator: GeneratorSpec, *, seed: int, index: int) -> list[GenInvocation]:
    """The invocations of ``generator``, the ``index``-th of a scenario seeded with ``seed``."""
    # A string seed is hashed the same way in every process (unlike hash() of a str).
    rng = random.Random(f"{seed}:{index}")
    draw = _Draw(generator, rng)
    service = generator.service if generator.api is Api.FC2 else None
    numbered_payload = "{n}" in generator.payload
    invocations: list[GenInvocation] = []
    for offset, invocation_id in enumerate(generated_ids(generator)):
        begin_s = generator.start_s + offset * generator.every_s
        payload = generator.payload
        if numbered_payload:
            payload = payload.replace("{n}", str(generator.id_start + offset))
        invocations.append(
            GenInvocation(
                id=invocation_id,
                api=generator.api,
                service=service,
                function=generator.function,
                qualifier=generator.qualifier,
                payload=payload,
                appears_at_s=begin_s,
                timeline=draw.timeline(begin_s),
            )
        )
    return invocations


def _bounds(span: Span) -> tuple[float, float]:
    return span if isinstance(span, tuple) else (span, span)


class _Draw:
    """Draws one timeline after another from a generator's ranges and weights.

    The draws are inlined (``low + width * random()`` is what ``uniform`` does): this loop runs
    once per generated invocation, 100,000 times for the benchmark."""

    def __init__(self, generator: GeneratorSpec, rng: random.Random) -> None:
        self._g = generator
        self._random = rng.random
        self._statuses = list(generator.outcomes)
        self._cumulative = list(accumulate(generator.outcomes.values()))
        self._detail = '{"Error": ' + json.dumps(generator.error) + ', "Attempt": '
        self._queue = _bounds(generator.queue_s)
        self._run = _bounds(generator.run_s)
        low, high = _bounds(generator.retries)
        self._retries = (int(low), int(high) - int(low) + 1)

    def timeline(self, begin_s: float) -> tuple[GenStep, ...]:
        # Always the same draws in the same order, so one outcome never shifts the others.
        random_ = self._random
        queued_s = self._queue[0] + (self._queue[1] - self._queue[0]) * random_()
        run_s = self._run[0] + (self._run[1] - self._run[0]) * random_()
        retries = self._retries[0] + int(self._retries[1] * random_())
        pick = random_() * self._cumulative[-1]
        outcome = self._statuses[bisect.bisect_right(self._cumulative, pick)]
        if outcome in ("Expired", "Invalid"):  # never ran: dropped from the queue
            return (GenStep(begin_s, "Enqueued"), GenStep(begin_s + queued_s + run_s, outcome))
        running_s = begin_s + queued_s
        steps = [GenStep(begin_s, "Enqueued"), GenStep(running_s, "Running")]
        attempt_s = run_s / (retries + 1)
        for attempt in range(1, retries + 1):
            # Each failed attempt runs half its share, then waits out the rest Retrying.
            retry_s = running_s + attempt_s * (attempt - 0.5)
            detail = f"{self._detail}{attempt}}}"
            steps.append(GenStep(retry_s, "Retrying", self._g.error, detail))
            steps.append(GenStep(running_s + attempt_s * attempt, "Running"))
        if outcome != "Running":
            error = self._g.error if outcome == "Failed" else None
            returned = self._g.return_payload if outcome == "Succeeded" else None
            steps.append(GenStep(running_s + run_s, outcome, error, None, returned))
        return tuple(steps)
