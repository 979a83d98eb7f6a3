"""The log sink: each transition becomes one structlog event named ``transition``.

Under systemd that is one JSON line per transition in the journal; on a terminal, a readable
line. It never fails, so it is also the default destination when no routes are configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from watcher.config.delivery import LogSinkSettings
from watcher.core.invocation import Status
from watcher.core.model import Transition, TransitionType
from watcher.delivery.sinks.base import Batching, Outgoing, Sink

_ALARMING_STATUSES = frozenset({Status.FAILED, Status.EXPIRED, Status.INVALID, Status.STOPPED})
_ALARMING_TYPES = frozenset(
    {TransitionType.NOT_FOUND, TransitionType.POLL_FAILING, TransitionType.STUCK}
)


def log_fields(transition: Transition) -> dict[str, Any]:
    """The flat fields of a transition, as logged."""
    fn = transition.ref.function_ref
    fields: dict[str, Any] = {
        "transition_id": transition.id,
        "type": transition.type.value,
        "api": fn.api.value,
        "service": fn.service,
        "function": fn.function,
        "qualifier": fn.qualifier,
        "invocation_id": transition.ref.invocation_id,
        "status": transition.status,
        "previous_status": transition.previous_status,
    }
    if transition.event is not None:
        fields["event_id"] = transition.event.event_id
        fields["event_status"] = transition.event.status
        fields["event_timestamp_ms"] = transition.event.timestamp_ms
        fields["event_detail"] = transition.event.event_detail
    if transition.invocation is not None:
        fields["retries"] = transition.invocation.already_retried_times
        if transition.invocation.error_message:
            fields["error"] = transition.invocation.error_message
    if transition.detail:
        fields["detail"] = transition.detail
    if transition.labels:
        fields["labels"] = transition.labels
    return {key: value for key, value in fields.items() if value is not None}


def is_alarming(transition: Transition) -> bool:
    """Whether this transition is bad news (logged at warning)."""
    if transition.type in _ALARMING_TYPES:
        return True
    return (
        transition.type is TransitionType.STATUS_CHANGED and transition.status in _ALARMING_STATUSES
    )


class LogSink(Sink):
    """Logs every transition it is given."""

    def __init__(self, settings: LogSinkSettings) -> None:
        super().__init__(settings.name, Batching(max_batch=settings.max_batch))
        self._level = settings.level
        self._log = structlog.get_logger("watcher.transitions").bind(sink=settings.name)

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        for item in batch:
            level = "warning" if is_alarming(item.transition) else self._level
            getattr(self._log, level)("transition", **log_fields(item.transition))
