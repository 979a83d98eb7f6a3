"""What the watcher knows and says: per-invocation snapshots and the transitions between them.

A ``Snapshot`` is what the state store keeps for one invocation between polls. A ``Transition``
is one thing worth telling someone about; its ``id`` is derived only from what it describes, so
re-deriving it after a crash or a restart gives the same id, and that id is the idempotency key
all the way down to a webhook's ``webhook-id``. No I/O here.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationEvent, InvocationRef


class TransitionType(StrEnum):
    """Every kind of transition the watcher emits; the values are a public contract."""

    STATUS_CHANGED = "invocation.status_changed"
    """The status (or the retry count within one status) changed; first sighting included."""
    EVENT = "invocation.event"
    """FC logged a new event for the invocation."""
    NOT_FOUND = "invocation.not_found"
    """FC kept answering not-found past the grace period after submission."""
    POLL_FAILING = "invocation.poll_failing"
    """Polling this invocation failed several times in a row."""
    POLL_RECOVERED = "invocation.poll_recovered"
    """Polling works again after ``invocation.poll_failing``."""
    STUCK = "invocation.stuck"
    """Enqueued, Dequeued or Running for longer than ``stuck_after_s`` (again every
    ``stuck_repeat_s`` when set)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The durable knowledge about one invocation after its last committed poll."""

    status: str | None = None
    """None until FC has answered with the invocation at least once."""
    already_retried_times: int = 0
    status_changes: int = 0
    """How many status changes were recorded: part of their ids, so a status that comes back
    without a retry (A, B, A, B) is still a new transition each time."""
    event_high_water: int = 0
    """The highest eventId already turned into a transition."""
    started_ms: int = 0
    end_ms: int = 0
    error_message: str = ""
    last_event_status: str = ""
    last_event_ms: int = 0
    not_found_count: int = 0
    not_found_reported: bool = False
    first_not_found_ms: int = 0
    failing_episode: int = 0
    """How many poll_failing episodes began: part of their ids, so each episode is new."""
    failing: bool = False
    changed_ms: int = 0
    """When this snapshot last changed."""
    status_since_ms: int = 0
    """When the current status began (its event's timestamp, else when it was first seen)."""
    stuck_reported: int = 0
    """How many ``invocation.stuck`` reminders were sent for the current status."""


@dataclass(frozen=True, slots=True)
class InvocationSummary:
    """The invocation as it was when a transition was derived, so receivers need no second call."""

    status: str
    already_retried_times: int
    started_ms: int
    end_ms: int
    duration_ms: int
    error_message: str
    request_id: str = ""
    instance_id: str = ""
    destination_status: str = ""
    payload_excerpt: str = ""

    @classmethod
    def of(cls, invocation: Invocation, payload_excerpt_chars: int = 512) -> InvocationSummary:
        return cls(
            status=invocation.status,
            already_retried_times=invocation.already_retried_times,
            started_ms=invocation.started_ms,
            end_ms=invocation.end_ms,
            duration_ms=invocation.duration_ms,
            error_message=invocation.error_message,
            request_id=invocation.request_id,
            instance_id=invocation.instance_id,
            destination_status=invocation.destination_status,
            payload_excerpt=invocation.payload[:payload_excerpt_chars],
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """One change worth telling someone about."""

    id: str
    type: TransitionType
    ref: InvocationRef
    observed_ms: int
    status: str | None = None
    previous_status: str | None = None
    event: InvocationEvent | None = None
    invocation: InvocationSummary | None = None
    detail: str = ""
    """For poll_failing / not_found: what went wrong, in one line."""
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: stored in the state DB and sent as a webhook's ``data``."""
        fn = self.ref.function_ref
        return {
            "id": self.id,
            "type": self.type.value,
            "api": fn.api.value,
            "service": fn.service,
            "function": fn.function,
            "qualifier": fn.qualifier,
            "invocationId": self.ref.invocation_id,
            "observedMs": self.observed_ms,
            "status": self.status,
            "previousStatus": self.previous_status,
            "event": (
                {
                    "eventId": self.event.event_id,
                    "status": self.event.status,
                    "timestampMs": self.event.timestamp_ms,
                    "eventDetail": self.event.event_detail,
                }
                if self.event
                else None
            ),
            "invocation": _camel(asdict(self.invocation)) if self.invocation else None,
            "detail": self.detail,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transition:
        """Inverse of ``to_dict``."""
        ref = InvocationRef(
            FunctionRef(Api(data["api"]), data["function"], data["service"], data["qualifier"]),
            data["invocationId"],
        )
        event = data.get("event")
        summary = data.get("invocation")
        return cls(
            id=data["id"],
            type=TransitionType(data["type"]),
            ref=ref,
            observed_ms=data["observedMs"],
            status=data.get("status"),
            previous_status=data.get("previousStatus"),
            event=(
                InvocationEvent(
                    event_id=event["eventId"],
                    status=event["status"],
                    timestamp_ms=event["timestampMs"],
                    event_detail=event["eventDetail"],
                )
                if event
                else None
            ),
            invocation=InvocationSummary(**_snake(summary)) if summary else None,
            detail=data.get("detail", ""),
            labels=dict(data.get("labels") or {}),
        )


_SUMMARY_FIELDS = {
    "already_retried_times": "alreadyRetriedTimes",
    "started_ms": "startedMs",
    "end_ms": "endMs",
    "duration_ms": "durationMs",
    "error_message": "errorMessage",
    "request_id": "requestId",
    "instance_id": "instanceId",
    "destination_status": "destinationStatus",
    "payload_excerpt": "payloadExcerpt",
}
_SUMMARY_FIELDS_BACK = {camel: snake for snake, camel in _SUMMARY_FIELDS.items()}


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    return {_SUMMARY_FIELDS.get(key, key): value for key, value in values.items()}


def _snake(values: dict[str, Any]) -> dict[str, Any]:
    return {_SUMMARY_FIELDS_BACK.get(key, key): value for key, value in values.items()}


def transition_id(ref: InvocationRef, kind: TransitionType, *parts: object) -> str:
    """A deterministic id: the same facts always give the same id, other facts another one.

    Fields are length-prefixed before hashing, so no two different tuples can collide by
    concatenation (``("ab", "c")`` vs ``("a", "bc")``).
    """
    fn = ref.function_ref
    fields = (
        fn.api.value,
        fn.service or "",
        fn.function,
        fn.qualifier or "",
        ref.invocation_id,
        kind.value,
        *("" if part is None else str(part) for part in parts),
    )
    digest = hashlib.sha256()
    for text in fields:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return "tr_" + digest.hexdigest()[:40]
