"""Emulator scenarios: which invocations exist, how their state unfolds, which faults to inject.

A scenario is YAML validated by pydantic. Time in a scenario is seconds from the emulator's
start (``at_s``). ``state_at`` is pure: given an invocation and the elapsed time it returns the
API body FC would serve then, or ``None`` while the invocation does not exist yet.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from watcher.core.invocation import IDENTIFIER_PATTERN, TERMINAL_STATUSES, Api

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

    at_s: float = Field(ge=0)
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
    faults: tuple[FaultSpec, ...] = ()


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


def state_at(
    spec: InvocationSpec,
    elapsed_s: float,
    *,
    epoch_ms: int,
    account_id: str,
    region: str,
    stopped_at_s: float | None = None,
) -> dict[str, Any] | None:
    """The body FC would serve for ``spec`` at ``elapsed_s``; ``None`` while it is not found.

    ``epoch_ms`` is the wall time of elapsed 0. A stop request at ``stopped_at_s`` cuts the
    timeline there and appends Stopping and Stopped.
    """
    if spec.appears_at_s is None or elapsed_s < spec.appears_at_s:
        return None
    steps = _steps_at(spec, elapsed_s, stopped_at_s)
    status = steps[-1].status if steps else "Enqueued"
    first_ms = epoch_ms + int((steps[0].at_s if steps else spec.appears_at_s) * 1000)
    end_ms = epoch_ms + int(steps[-1].at_s * 1000) if status in TERMINAL_STATUSES else 0
    error = next((s.error for s in reversed(steps) if s.error is not None), "")
    returned = next((s.return_payload for s in reversed(steps) if s.return_payload), "")
    body: dict[str, Any] = {
        "qualifier": spec.qualifier,
        "status": status,
        "startedTime": first_ms,
        "endTime": end_ms,
        "durationMs": end_ms - first_ms if end_ms else 0,
        "destinationStatus": spec.destination_status,
        "returnPayload": returned,
        "alreadyRetriedTimes": sum(1 for s in steps if s.status == "Retrying"),
        "requestId": spec.request_id,
        "instanceId": spec.instance_id,
        "events": _events(steps, epoch_ms),
    }
    return body | _api_fields(spec, error, account_id=account_id, region=region)


def _steps_at(spec: InvocationSpec, elapsed_s: float, stopped_at_s: float | None) -> list[Step]:
    """The steps taken by ``elapsed_s``; a stop by then cuts the rest and ends the timeline."""
    steps = [step for step in spec.timeline if step.at_s <= elapsed_s]
    if stopped_at_s is not None and stopped_at_s <= elapsed_s:
        steps = [step for step in steps if step.at_s <= stopped_at_s]
        steps += [
            Step(at_s=stopped_at_s, status="Stopping"),
            Step(at_s=stopped_at_s, status="Stopped"),
        ]
    return steps


def _events(steps: list[Step], epoch_ms: int) -> list[dict[str, Any]]:
    """FC's event list: numbered from 1, and only for steps that log one."""
    return [
        {
            "eventId": index + 1,
            "status": step.status,
            "timestamp": epoch_ms + int(step.at_s * 1000),
            "eventDetail": step.detail or "",
        }
        for index, step in enumerate(s for s in steps if s.event)
    ]


def _api_fields(
    spec: InvocationSpec, error: str, *, account_id: str, region: str
) -> dict[str, Any]:
    """The fields FC 2.0 and FC 3.0 name differently (an invocation vs. an async task)."""
    if spec.api is Api.FC2:
        return {
            "serviceName": spec.service or "",
            "functionName": spec.function,
            "invocationId": spec.id,
            "invocationErrorMessage": error,
            "invocationPayload": spec.payload,
        }
    return {
        "functionArn": f"acs:fc:{region}:{account_id}:functions/{spec.function}",
        "taskId": spec.id,
        "taskErrorMessage": error,
        "taskPayload": spec.payload,
    }
