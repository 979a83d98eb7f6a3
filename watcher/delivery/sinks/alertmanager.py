"""The Alertmanager sink: POST /api/v2/alerts with a finite endsAt.

A failed task is an event, not a condition, so each alert ends ``ends_after_s`` after it
starts. The label set (alertname, service, function, qualifier, status, severity) is the
alert's identity in Alertmanager; the invocation id is an annotation, so a burst of failures of
one function stays one alert with a count in the receiver, not one alert per task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from watcher.config.delivery import AlertmanagerSinkSettings
from watcher.core.model import TransitionType
from watcher.core.render import console_url, render
from watcher.delivery.sinks._http import classify, post
from watcher.delivery.sinks.base import REAL_TIME, Batching, Outgoing, Sink, Timer

_ALERT_NAMES = {
    TransitionType.EVENT: "FCInvocationEvent",
    TransitionType.NOT_FOUND: "FCInvocationNotFound",
    TransitionType.POLL_FAILING: "FCInvocationPollFailing",
    TransitionType.POLL_RECOVERED: "FCInvocationPollRecovered",
    TransitionType.STUCK: "FCInvocationStuck",
}


def alert(item: Outgoing, *, region: str | None, ends_after_s: float) -> dict[str, Any]:
    """One postable alert for one transition."""
    transition = item.transition
    fn = transition.ref.function_ref
    if transition.type is TransitionType.STATUS_CHANGED:
        alertname = f"FCInvocation{(transition.status or 'Unknown').capitalize()}"
    else:
        alertname = _ALERT_NAMES[transition.type]
    starts = datetime.fromtimestamp(transition.observed_ms / 1000, UTC)
    labels = {
        "alertname": alertname,
        "service": fn.service or "",
        "function": fn.function,
        "qualifier": fn.qualifier or "",
        "status": transition.status or "",
        "severity": item.severity,
    }
    message = render(transition, region=region, severity=item.severity, template=item.template)
    annotations = {
        "summary": message.title,
        "invocation_id": transition.ref.invocation_id,
        "transition_id": transition.id,
        "error": transition.invocation.error_message if transition.invocation else "",
        "description": "\n".join(message.lines),
    }
    body: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": starts.isoformat().replace("+00:00", "Z"),
        "endsAt": (starts + timedelta(seconds=ends_after_s)).isoformat().replace("+00:00", "Z"),
    }
    link = console_url(transition, region)
    if link:
        body["generatorURL"] = link
    return body


class AlertmanagerSink(Sink):
    """Pushes alerts to one Alertmanager."""

    def __init__(
        self,
        settings: AlertmanagerSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
        timer: Timer = REAL_TIME,
    ) -> None:
        super().__init__(
            settings.name,
            Batching(max_batch=settings.max_batch, max_in_flight=settings.concurrency),
            rate_per_s=settings.rate_limit_per_s,
            timer=timer,
        )
        self._url = settings.url.get_secret_value().rstrip("/") + "/api/v2/alerts"
        self._headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self._ends_after_s = settings.ends_after_s
        self._timeout_s = settings.timeout_s
        self._session = session
        self._region = region
        self._secrets = (settings.url.get_secret_value(), *self._headers.values())

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        alerts = [alert(i, region=self._region, ends_after_s=self._ends_after_s) for i in batch]
        reply = await post(
            self._session,
            self._url,
            json.dumps(alerts, ensure_ascii=False).encode(),
            headers=self._headers,
            timeout_s=self._timeout_s,
            secrets=self._secrets,
        )
        error = classify(reply)
        if error is not None:
            raise error
