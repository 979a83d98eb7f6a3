"""The Alertmanager sink: POST /api/v2/alerts, one alert per invocation and kind.

Identity: Alertmanager keeps one alert per label set and notifies about it once, so the
invocation id is a label. Without it a burst of failures of one function is one alert whose
annotations the last failure overwrites, and its receiver hears of the first failure only.
Alerts are resolved and forgotten, not stored as series, so a label per invocation costs
nothing; the route's ``group_by: [alertname, function]`` turns a burst into one notification.

Time: ``startsAt`` is when the transition was observed; ``endsAt`` is ``ends_after_s`` after
the send, read from the sink's wall clock when the row goes out. An ``endsAt`` counted from the
transition would already be past after an outage longer than ``ends_after_s`` (or for a
redelivered dead letter), and Alertmanager stores such an alert resolved and tells nobody.

Resolve: ``poll_recovered`` fires nothing; it ends the ``FCInvocationPollFailing`` alert of the
same invocation. That alert's severity came from its own route (the default routes give the
recovery another one), so its labels are taken from where they are known: the alerts
Alertmanager holds, and those earlier in the same batch. None found means nothing is firing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from watcher.config.delivery import AlertmanagerSinkSettings
from watcher.core.backoff import retry_after_s
from watcher.core.model import Transition, TransitionType
from watcher.core.redact import scrub
from watcher.core.render import console_url, render
from watcher.delivery.sinks._http import Reply, classify, post, redact_url
from watcher.delivery.sinks.base import (
    REAL_TIME,
    Batching,
    FailureKind,
    Outgoing,
    Sink,
    SinkError,
    Timer,
)

POLL_FAILING = "FCInvocationPollFailing"
_ALERT_NAMES = {
    TransitionType.EVENT: "FCInvocationEvent",
    TransitionType.NOT_FOUND: "FCInvocationNotFound",
    TransitionType.POLL_FAILING: POLL_FAILING,
    TransitionType.STUCK: "FCInvocationStuck",
}
_INVOCATION_KEYS = ("service", "function", "qualifier", "invocation_id")
"""The labels that say which invocation an alert is about."""

Labels = Mapping[str, str]


def stamp(seconds: float) -> str:
    """RFC 3339 in UTC, as Alertmanager's API takes it."""
    moment = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _invocation(transition: Transition) -> dict[str, str]:
    fn = transition.ref.function_ref
    return {
        "service": fn.service or "",
        "function": fn.function,
        "qualifier": fn.qualifier or "",
        "invocation_id": transition.ref.invocation_id,
    }


def labels_of(item: Outgoing) -> dict[str, str]:
    """The alert's identity in Alertmanager (empty values left out, as Alertmanager does)."""
    transition = item.transition
    if transition.type is TransitionType.STATUS_CHANGED:
        alertname = f"FCInvocation{(transition.status or 'Unknown').capitalize()}"
    else:
        alertname = _ALERT_NAMES[transition.type]
    labels = {
        "alertname": alertname,
        **_invocation(transition),
        "status": transition.status or "",
        "severity": item.severity,
    }
    return {k: v for k, v in labels.items() if v}


def _described(item: Outgoing, region: str | None) -> dict[str, Any]:
    """Annotations and link: what a receiver shows, not part of the alert's identity."""
    transition = item.transition
    message = render(transition, region=region, severity=item.severity, template=item.template)
    annotations = {
        "summary": message.title,
        "invocation_id": transition.ref.invocation_id,  # kept for templates that read it here
        "transition_id": transition.id,
        "error": transition.invocation.error_message if transition.invocation else "",
        "description": "\n".join(message.lines),
    }
    body: dict[str, Any] = {"annotations": {k: v for k, v in annotations.items() if v}}
    link = console_url(transition, region)
    if link:
        body["generatorURL"] = link
    return body


def alert(
    item: Outgoing, *, region: str | None, now_s: float, ends_after_s: float
) -> dict[str, Any]:
    """The firing alert for one transition, sent at ``now_s`` (wall clock, seconds)."""
    starts_s = item.transition.observed_ms / 1000
    return {
        "labels": labels_of(item),
        **_described(item, region),
        "startsAt": stamp(starts_s),
        # From the send, not the transition: a late row must still arrive firing. Never
        # before startsAt, which Alertmanager would reject (a clock ahead of this one).
        "endsAt": stamp(max(now_s, starts_s) + ends_after_s),
    }


def resolves(labels: Labels, recovered: Transition) -> bool:
    """Whether ``labels`` are those of the poll_failing alert that ``recovered`` ends."""
    invocation = _invocation(recovered)
    return labels.get("alertname") == POLL_FAILING and all(
        labels.get(key, "") == invocation[key] for key in _INVOCATION_KEYS
    )


def resolution(
    labels: Labels, item: Outgoing, *, region: str | None, now_s: float
) -> dict[str, Any]:
    """The alert that ends the firing one with ``labels`` now.

    No startsAt: Alertmanager then takes endsAt for it and merges this into the firing alert,
    which keeps its own start, whatever the clocks of the watcher and Alertmanager say.
    """
    return {"labels": dict(labels), **_described(item, region), "endsAt": stamp(now_s)}


def plan(
    batch: Sequence[Outgoing],
    standing: Iterable[Labels],
    *,
    region: str | None,
    now_s: float,
    ends_after_s: float,
) -> list[dict[str, Any]]:
    """The alerts one POST carries for ``batch``, given the poll_failing alerts standing in
    Alertmanager; a recovery also ends those fired earlier in the same batch."""
    failing = [dict(labels) for labels in standing]
    alerts: list[dict[str, Any]] = []
    for item in batch:
        if item.transition.type is not TransitionType.POLL_RECOVERED:
            fired = alert(item, region=region, now_s=now_s, ends_after_s=ends_after_s)
            alerts.append(fired)
            failing.append(fired["labels"])
            continue
        ended = _unique(labels for labels in failing if resolves(labels, item.transition))
        alerts.extend(resolution(labels, item, region=region, now_s=now_s) for labels in ended)
    return alerts


def _unique(found: Iterable[Labels]) -> list[Labels]:
    seen: dict[frozenset[tuple[str, str]], Labels] = {}
    for labels in found:
        seen.setdefault(frozenset(labels.items()), labels)
    return list(seen.values())


def _label_sets(text: str) -> list[dict[str, str]]:
    """The label sets in a GET /api/v2/alerts answer; ``ValueError`` if it is not one."""
    document = json.loads(text)
    if not isinstance(document, list):
        raise ValueError("not a list of alerts")
    return [
        {str(k): str(v) for k, v in entry["labels"].items()}
        for entry in document
        if isinstance(entry, dict) and isinstance(entry.get("labels"), dict)
    ]


class AlertmanagerSink(Sink):
    """Pushes alerts to one Alertmanager; ``clock`` is the wall clock that dates them (the
    ``timer``'s clock is monotonic: right for rate limits, meaningless as a date)."""

    def __init__(
        self,
        settings: AlertmanagerSinkSettings,
        session: aiohttp.ClientSession,
        *,
        region: str | None = None,
        timer: Timer = REAL_TIME,
        clock: Callable[[], float] = time.time,
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
        self._clock = clock
        self._secrets = (settings.url.get_secret_value(), *self._headers.values())

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        recovering = any(i.transition.type is TransitionType.POLL_RECOVERED for i in batch)
        standing = await self._standing() if recovering else []
        alerts = plan(
            batch,
            standing,
            region=self._region,
            now_s=self._clock(),
            ends_after_s=self._ends_after_s,
        )
        if not alerts:
            return  # only recoveries of alerts that already ended: nothing left to resolve
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

    async def _standing(self) -> list[dict[str, str]]:
        """The label sets of the poll_failing alerts Alertmanager holds (silenced and
        inhibited ones too: the API's defaults); it lists no resolved alert."""
        try:
            async with self._session.get(
                self._url,
                params={"filter": f'alertname="{POLL_FAILING}"'},
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                allow_redirects=False,
            ) as response:
                text = await response.text(errors="replace")
                status, waited = response.status, retry_after_s(response.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            reason = scrub(str(exc), (self._url, *self._secrets))[:200] or "no answer"
            raise SinkError(
                f"cannot list alerts at {redact_url(self._url)} ({type(exc).__name__}: {reason})",
                retryable=True,
                kind=FailureKind.TRANSPORT,
            ) from None
        error = classify(Reply(status, scrub(text[:2000], self._secrets), waited))
        if error is not None:
            raise error
        try:
            return _label_sets(text)
        except ValueError:
            # Not Alertmanager's answer (a proxy's page?): retry rather than resolve nothing.
            raise SinkError(
                f"GET {redact_url(self._url)} did not answer a list of alerts", retryable=True
            ) from None
