"""Emulator scenarios: which invocations exist, how their state unfolds, which faults to inject.

A scenario is YAML validated by pydantic. Time in a scenario is seconds from the emulator's
start (``at_s``; negative for invocations that started before the emulator did). Invocations are
listed one by one (``invocations``) or made in bulk by ``generators`` (see ``generators``).
``state_at`` (from ``timeline``, re-exported here) is pure: given an invocation and the elapsed
time it returns the API body FC would serve then, or ``None`` while it does not exist yet.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from watcher.core.invocation import IDENTIFIER_PATTERN, Api
from watcher.devtools.emulator.generators import GeneratorSpec, generated_ids
from watcher.devtools.emulator.index import key_of
from watcher.devtools.emulator.timeline import state_at as state_at  # where callers look for it
from watcher.devtools.emulator.tokens import TokenMode

ErrorStyle = Literal["ErrorCode", "errorCode", "Code"]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AccessKey(_Spec):
    """A key the emulator accepts; with ``security_token`` it is an STS key."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None


class Step(_Spec):
    """At ``at_s`` the invocation takes ``status`` and, unless ``event`` is false, logs an event."""

    at_s: float
    status: str = Field(min_length=1)
    error: str | None = None
    detail: str | None = None
    return_payload: str | None = None
    event: bool = True


class InvocationSpec(_Spec):
    """One invocation (FC 2.0) or async task (FC 3.0) and its timeline."""

    id: str
    api: Api = Api.FC2
    service: str | None = "demo-service"
    function: str = "demo-function"
    qualifier: str = "LATEST"
    payload: str = ""
    appears_at_s: float | None = 0.0
    """Until then the API answers not-found; ``null`` means never."""
    timeline: tuple[Step, ...] = ()
    request_id: str = ""
    instance_id: str = ""
    destination_status: str = ""

    @field_validator("timeline")
    @classmethod
    def _ordered(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        if any(later.at_s < earlier.at_s for earlier, later in pairwise(steps)):
            raise ValueError("timeline steps must be in at_s order")
        return steps

    @field_validator("id", "function")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if IDENTIFIER_PATTERN.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a valid FC identifier")
        return value


FaultKind = Literal["http_error", "latency", "reset", "truncated", "non_json", "oversized"]


class FaultSpec(_Spec):
    """A fault injected into matching requests, by probability, window or every Nth request."""

    kind: FaultKind
    probability: float = Field(1.0, ge=0, le=1)
    from_s: float | None = None
    until_s: float | None = None
    every_nth: int | None = Field(None, ge=1)
    match: str = "*"
    """fnmatch pattern on the invocation id (list calls match only ``*``)."""
    status: int = Field(503, ge=400, le=599)
    code: str | None = None
    retry_after_s: float | None = None
    retry_after_header: Literal["Retry-After", "x-acs-retry-after"] = "Retry-After"
    latency_ms: int = Field(0, ge=0)
    size_bytes: int = Field(9 * 1024 * 1024, ge=1)


class Scenario(_Spec):
    """Everything the emulator serves."""

    account_id: str = "1234567890123456"
    region: str = "cn-hangzhou"
    credentials: tuple[AccessKey, ...] = (
        # A fixed key for the emulator only; it opens nothing anywhere else.
        AccessKey(access_key_id="LTAI_EMULATOR", access_key_secret="emulator-secret"),  # noqa: S106
    )
    max_skew_s: float = 900.0
    error_style: ErrorStyle = "ErrorCode"
    seed: int = 0
    invocations: tuple[InvocationSpec, ...] = ()
    generators: tuple[GeneratorSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    list_events: bool = False
    """List items carry ``events`` only if true (Get always does)."""
    list_tokens: TokenMode = "keyset"
    """``offset`` pages by position: items repeat or are skipped when the set changes between
    pages, as some paginated APIs do; the watcher's tests use it to prove it survives both."""

    @model_validator(mode="after")
    def _unique_generated_ids(self) -> Scenario:
        # Explicit ids may repeat (the last one wins, as before); a generated id may not
        # collide with anything, or an invocation the generator promised would vanish.
        seen = {key_of(spec) for spec in self.invocations}
        for number, generator in enumerate(self.generators):
            api, service, function = generator.api, generator.service or "", generator.function
            for invocation_id in generated_ids(generator):
                key = (api, service, function, invocation_id)
                if key in seen:
                    raise ValueError(f"generators.{number}: id {invocation_id!r} is used twice")
                seen.add(key)
        return self


class ScenarioError(Exception):
    """A scenario file that cannot be used; the message says where and why."""


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML ({exc})") from None
    try:
        return Scenario.model_validate(document or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise ScenarioError(
            f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s))"
        ) from None
