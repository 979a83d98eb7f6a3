"""An invocation's state at a moment of its timeline, as the body FC would serve. Pure.

Works on anything shaped like an ``InvocationSpec`` (``InvocationLike``): the scenario's
pydantic specs and the generators' lighter records alike, so that 100,000 generated invocations
need not be built as pydantic models.

``startedTime`` is fixed for an invocation's whole life, as FC's is: its first step's time, or
its ``appears_at_s`` when it has no step. Get and List both report it, and List sorts by it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Protocol

from watcher.core.invocation import TERMINAL_STATUSES, Api
from watcher.devtools.emulator.generators import GenStep


class StepLike(Protocol):
    """A timeline step: ``scenario.Step`` or ``generators.GenStep``."""

    @property
    def at_s(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def return_payload(self) -> str | None: ...
    @property
    def event(self) -> bool: ...


class InvocationLike(Protocol):
    """An invocation and its timeline: ``scenario.InvocationSpec`` or ``GenInvocation``."""

    @property
    def id(self) -> str: ...
    @property
    def api(self) -> Api: ...
    @property
    def service(self) -> str | None: ...
    @property
    def function(self) -> str: ...
    @property
    def qualifier(self) -> str: ...
    @property
    def payload(self) -> str: ...
    @property
    def appears_at_s(self) -> float | None: ...
    @property
    def timeline(self) -> Sequence[StepLike]: ...
    @property
    def request_id(self) -> str: ...
    @property
    def instance_id(self) -> str: ...
    @property
    def destination_status(self) -> str: ...


def epoch_at(epoch_ms: int, at_s: float) -> int:
    """Wall time (epoch ms) of scenario time ``at_s``; every timestamp served goes through here,
    so List's sort keys and the bodies' times agree to the millisecond."""
    return epoch_ms + int(at_s * 1000)


def started_s(spec: InvocationLike) -> float:
    """Scenario time of ``startedTime``: the first step, else the appearance (0 if never)."""
    if spec.timeline:
        return spec.timeline[0].at_s
    return spec.appears_at_s or 0.0


def phase_at(
    spec: InvocationLike, elapsed_s: float, stopped_at_s: float | None
) -> tuple[int, bool, bool]:
    """What ``state_at`` depends on besides ``elapsed_s``: equal phases give equal bodies."""
    return (
        bisect.bisect_right(spec.timeline, elapsed_s, key=lambda step: step.at_s),
        spec.appears_at_s is not None and elapsed_s >= spec.appears_at_s,
        stopped_at_s is not None and stopped_at_s <= elapsed_s,
    )


def state_at(
    spec: InvocationLike,
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
    first_ms = epoch_at(epoch_ms, started_s(spec))
    end_ms = epoch_at(epoch_ms, steps[-1].at_s) if status in TERMINAL_STATUSES else 0
    error = next((s.error for s in reversed(steps) if s.error is not None), "")
    returned = next((s.return_payload for s in reversed(steps) if s.return_payload), "")
    body: dict[str, Any] = {
        "qualifier": spec.qualifier,
        "status": status,
        "startedTime": first_ms,
        "endTime": end_ms,
        # A stop before the first step ends it before it "started": never a negative duration.
        "durationMs": max(0, end_ms - first_ms) if end_ms else 0,
        "destinationStatus": spec.destination_status,
        "returnPayload": returned,
        "alreadyRetriedTimes": sum(1 for s in steps if s.status == "Retrying"),
        "requestId": spec.request_id,
        "instanceId": spec.instance_id,
        "events": _events(steps, epoch_ms),
    }
    return body | _api_fields(spec, error, account_id=account_id, region=region)


def _steps_at(spec: InvocationLike, elapsed_s: float, stopped_at_s: float | None) -> list[StepLike]:
    """The steps taken by ``elapsed_s``; a stop by then cuts the rest and ends the timeline."""
    steps: list[StepLike] = [step for step in spec.timeline if step.at_s <= elapsed_s]
    if stopped_at_s is not None and stopped_at_s <= elapsed_s:
        steps = [step for step in steps if step.at_s <= stopped_at_s]
        steps += [GenStep(stopped_at_s, "Stopping"), GenStep(stopped_at_s, "Stopped")]
    return steps


def _events(steps: list[StepLike], epoch_ms: int) -> list[dict[str, Any]]:
    """FC's event list: numbered from 1, and only for steps that log one."""
    return [
        {
            "eventId": index + 1,
            "status": step.status,
            "timestamp": epoch_at(epoch_ms, step.at_s),
            "eventDetail": step.detail or "",
        }
        for index, step in enumerate(s for s in steps if s.event)
    ]


def _api_fields(
    spec: InvocationLike, error: str, *, account_id: str, region: str
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
