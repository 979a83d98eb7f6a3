"""The invocation itself, as every layer sees it: which API, which function, which id, which
status, and what FC says of it.

FC 2.0 says ``invocationId`` / ``invocationPayload`` / ``invocationErrorMessage`` where FC 3.0 says
``taskId`` / ``taskPayload`` / ``taskErrorMessage``; both spellings parse into one ``Invocation``
so nothing past the client cares which API a task lives in. Parsing is lenient where the API is
vague (unknown keys ignored, optional fields defaulted, unknown statuses kept verbatim) and strict
where a wrong guess would invent an alert (no status string). Identifiers are validated when a
reference is built, so a hostile id can never reach a request path. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field


class InvalidIdentifierError(ValueError):
    """A service, function, qualifier or invocation id that FC would never accept.

    Raised before any request is built, so a hostile id can never change a request path.
    """


class Api(StrEnum):
    """Which FC API generation a task lives in."""

    FC2 = "fc2"
    """FC 2.0, API 2021-04-06: stateful async invocations under a service."""
    FC3 = "fc3"
    """FC 3.0, API 2023-03-30: async tasks of a top-level function."""


class Status(StrEnum):
    """The documented task statuses. The API may send others; those stay plain strings."""

    ENQUEUED = "Enqueued"
    """Accepted into FC's internal queue."""
    DEQUEUED = "Dequeued"
    """Taken off the queue, waiting to be dispatched."""
    RUNNING = "Running"
    """Executing."""
    RETRYING = "Retrying"
    """Failed once and waiting for, or in, a retry under the retry policy."""
    STOPPING = "Stopping"
    """A stop was requested and has not finished."""
    SUCCEEDED = "Succeeded"
    """Finished successfully (terminal)."""
    FAILED = "Failed"
    """Failed, after any retries (terminal)."""
    STOPPED = "Stopped"
    """Stopped by a user (terminal)."""
    EXPIRED = "Expired"
    """Discarded unexecuted once the max event age passed (terminal)."""
    INVALID = "Invalid"
    """Never executed, e.g. the function was deleted (terminal)."""


TERMINAL_STATUSES: frozenset[str] = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.STOPPED, Status.EXPIRED, Status.INVALID}
)

IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def validate_identifier(kind: str, value: object) -> str:
    """Return ``value`` if it is a legal FC name or id, else raise naming it (escaped)."""
    if not isinstance(value, str) or IDENTIFIER_PATTERN.fullmatch(value) is None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidIdentifierError(
            f"invalid {kind} {shown}: use 1 to 128 letters, digits, '_' or '-'"
        )
    return value


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A function whose tasks can be listed: a service is required for FC 2.0 only."""

    api: Api
    function: str
    service: str | None = None
    qualifier: str | None = None

    def __post_init__(self) -> None:
        if self.api is Api.FC2:
            validate_identifier("service name", self.service)
        elif self.service is not None:
            raise InvalidIdentifierError("an FC 3.0 function has no service; remove 'service'")
        validate_identifier("function name", self.function)
        if self.qualifier is not None:
            validate_identifier("qualifier", self.qualifier)


@dataclass(frozen=True, slots=True)
class InvocationRef:
    """One tracked invocation (FC 2.0) or async task (FC 3.0), validated on construction."""

    function_ref: FunctionRef
    invocation_id: str
    key: str = field(init=False, repr=False, compare=False)
    """A stable text key, unique per tracked invocation (state store, scheduler, caches).
    Computed once: the polling path looks it up several times per poll."""

    def __post_init__(self) -> None:
        validate_identifier("invocation id", self.invocation_id)
        fn = self.function_ref
        key = "/".join(
            (fn.api.value, fn.service or "", fn.function, fn.qualifier or "", self.invocation_id)
        )
        object.__setattr__(self, "key", key)  # frozen: set once, here


def _to_epoch_ms(value: Any) -> Any:
    """FC declares times as epoch ms, but old docs show ISO strings: accept both, and null."""
    if value is None or value == "":
        return 0
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return value  # let pydantic report it
    return value


def _none_to_empty(value: Any) -> Any:
    return "" if value is None else value


def _none_to_zero(value: Any) -> Any:
    return 0 if value is None else value


EpochMs = Annotated[int, BeforeValidator(_to_epoch_ms)]
Text = Annotated[str, BeforeValidator(_none_to_empty)]
Count = Annotated[int, BeforeValidator(_none_to_zero)]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class InvocationEvent(_Wire):
    """One entry of an invocation's event list."""

    event_id: int = Field(validation_alias=AliasChoices("eventId", "event_id"))
    status: Text = ""
    timestamp_ms: EpochMs = Field(0, validation_alias=AliasChoices("timestamp", "timestamp_ms"))
    event_detail: Text = Field("", validation_alias=AliasChoices("eventDetail", "event_detail"))


def _events(value: Any) -> Any:
    return () if value is None else value


class Invocation(_Wire):
    """A stateful async invocation (FC 2.0) or async task (FC 3.0), in one shape."""

    status: str = Field(min_length=1)
    invocation_id: Text = Field("", validation_alias=AliasChoices("invocationId", "taskId"))
    service_name: Text = Field("", validation_alias=AliasChoices("serviceName"))
    function_name: Text = Field("", validation_alias=AliasChoices("functionName"))
    function_arn: Text = Field("", validation_alias=AliasChoices("functionArn"))
    qualifier: Text = ""
    started_ms: EpochMs = Field(0, validation_alias=AliasChoices("startedTime"))
    end_ms: EpochMs = Field(0, validation_alias=AliasChoices("endTime"))
    duration_ms: Count = Field(0, validation_alias=AliasChoices("durationMs"))
    destination_status: Text = Field("", validation_alias=AliasChoices("destinationStatus"))
    error_message: Text = Field(
        "", validation_alias=AliasChoices("invocationErrorMessage", "taskErrorMessage")
    )
    payload: Text = Field("", validation_alias=AliasChoices("invocationPayload", "taskPayload"))
    return_payload: Text = Field("", validation_alias=AliasChoices("returnPayload"))
    already_retried_times: Count = Field(0, validation_alias=AliasChoices("alreadyRetriedTimes"))
    request_id: Text = Field("", validation_alias=AliasChoices("requestId"))
    instance_id: Text = Field("", validation_alias=AliasChoices("instanceId"))
    events: Annotated[tuple[InvocationEvent, ...], BeforeValidator(_events)] = ()

    @property
    def is_terminal(self) -> bool:
        """True for the five documented final statuses; an unknown status never is."""
        return self.status in TERMINAL_STATUSES
