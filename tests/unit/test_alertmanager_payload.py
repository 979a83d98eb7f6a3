"""What the Alertmanager sink posts: one alert per invocation, dated by the injected wall clock,
and a poll_recovered that ends the poll_failing alert rather than firing one of its own."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pydantic import TypeAdapter

from tests.conftest import Receiver
from watcher.config.delivery import AlertmanagerSinkSettings
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import InvocationSummary, Transition, TransitionType
from watcher.core.outcome import make_transition
from watcher.delivery.sinks import Outgoing, SinkError
from watcher.delivery.sinks.alertmanager import AlertmanagerSink, alert, plan, stamp

SENT_S = 1_800_000_000.0
"""The injected wall clock: when the row goes out."""
HOUR_AGO_MS = int((SENT_S - 3600) * 1000)


def transition(
    kind: TransitionType,
    status: str,
    invocation_id: str = "job-1",
    *,
    function: str = "transcode",
    observed_ms: int = HOUR_AGO_MS,
) -> Transition:
    where = InvocationRef(FunctionRef(Api.FC2, function, "media", "LATEST"), invocation_id)
    summary = InvocationSummary(status, 0, 0, 0, 0, "boom")
    return make_transition(
        where,
        kind,
        (status,),
        observed_ms=observed_ms,
        status=status,
        labels=None,
        invocation=summary,
    )


def failed(invocation_id: str = "job-1") -> Outgoing:
    return Outgoing(transition(TransitionType.STATUS_CHANGED, "Failed", invocation_id), "critical")


def failing(invocation_id: str = "job-1", function: str = "transcode") -> Outgoing:
    kind = TransitionType.POLL_FAILING
    return Outgoing(transition(kind, "Running", invocation_id, function=function), "warning")


def recovered(invocation_id: str = "job-1") -> Outgoing:
    kind = TransitionType.POLL_RECOVERED
    return Outgoing(
        transition(kind, "Succeeded", invocation_id, observed_ms=HOUR_AGO_MS + 1), "info"
    )


def posted(batch: list[Outgoing], standing: list[dict[str, str]] | None = None) -> list[Any]:
    return plan(batch, standing or [], region=None, now_s=SENT_S, ends_after_s=600)


def test_each_invocation_is_its_own_alert() -> None:
    """The invocation id is a label, so Alertmanager keeps one alert per failed invocation."""
    first, second = posted([failed("a"), failed("b")])
    assert first["labels"] == {
        "alertname": "FCInvocationFailed",
        "service": "media",
        "function": "transcode",
        "qualifier": "LATEST",
        "invocation_id": "a",
        "status": "Failed",
        "severity": "critical",
    }
    assert second["labels"] == {**first["labels"], "invocation_id": "b"}
    assert first["annotations"]["summary"] != second["annotations"]["summary"]


def test_starts_at_the_transition_and_ends_after_the_send() -> None:
    """Sent an hour late with ends_after_s 600: still firing for 600 s from the send."""
    (late,) = posted([failed()])
    assert late["startsAt"] == stamp(HOUR_AGO_MS / 1000)
    assert late["endsAt"] == stamp(SENT_S + 600)
    assert datetime.fromisoformat(late["endsAt"]).timestamp() == SENT_S + 600


def test_ends_at_is_never_before_starts_at() -> None:
    """A transition dated after the send (another clock ahead) still gets a valid alert."""
    ahead = Outgoing(
        transition(TransitionType.STATUS_CHANGED, "Failed", observed_ms=int((SENT_S + 60) * 1000))
    )
    body = alert(ahead, region=None, now_s=SENT_S, ends_after_s=600)
    assert body["endsAt"] == stamp(SENT_S + 60 + 600)


def test_recovery_ends_the_failing_alert_of_the_same_batch() -> None:
    """Same labels as the poll_failing alert (its severity and status, not the recovery's),
    endsAt now, no startsAt (Alertmanager keeps the firing alert's), nothing new fires."""
    fired, ended = posted([failing(), recovered()])
    assert ended["labels"] == fired["labels"]
    assert ended["labels"]["alertname"] == "FCInvocationPollFailing"
    assert ended["labels"]["severity"] == "warning"
    assert ended["endsAt"] == stamp(SENT_S)
    assert "startsAt" not in ended
    assert ended["annotations"]["transition_id"] == recovered().transition.id  # says why


def test_recovery_ends_only_its_own_invocations_standing_alert() -> None:
    standing = [
        fired["labels"]
        for fired in posted([failing("job-1"), failing("job-2"), failing("job-1", "other")])
    ]
    ended = posted([recovered("job-1")], standing)
    assert [e["labels"] for e in ended] == [standing[0]]
    assert posted([recovered("job-1")], []) == []  # nothing firing: nothing to end


def am(receiver: Receiver, session: aiohttp.ClientSession, url: str = "") -> AlertmanagerSink:
    settings = TypeAdapter(AlertmanagerSinkSettings).validate_python(
        {"name": "am", "type": "alertmanager", "url": url or receiver.url, "ends_after_s": 600}
    )
    return AlertmanagerSink(settings, session, clock=lambda: SENT_S)


async def test_recovery_asks_alertmanager_what_is_firing(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """The failing alert's labels come from Alertmanager: the route gave it its severity."""
    standing = posted([failing()])[0]["labels"]
    receiver.answer((200, json.dumps([{"labels": standing, "fingerprint": "f"}])))
    await am(receiver, http_session).send([recovered()])
    (get, _, _), (post, _, body) = receiver.requests
    query = parse_qs(urlsplit(get).query)
    assert query == {"filter": ['alertname="FCInvocationPollFailing"']}
    assert post == "/api/v2/alerts"
    (ended,) = json.loads(body)
    assert ended["labels"] == standing
    assert ended["endsAt"] == stamp(SENT_S)


async def test_a_recovery_with_nothing_firing_posts_nothing(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    receiver.answer((200, "[]"))
    await am(receiver, http_session).send([recovered()])
    assert [path.split("?")[0] for path, _, _ in receiver.requests] == ["/api/v2/alerts"]


@pytest.mark.parametrize(("status", "body"), [(503, "busy"), (200, "<html>proxy</html>")])
async def test_a_failed_look_up_is_retried_and_redacted(
    receiver: Receiver, http_session: aiohttp.ClientSession, status: int, body: str
) -> None:
    """Resolving nothing would leave the alert firing: the batch is retried instead."""
    receiver.answer((status, body))
    url = receiver.url.replace("http://", "http://admin:hunter2@")
    with pytest.raises(SinkError) as caught:
        await am(receiver, http_session, url).send([recovered()])
    assert caught.value.retryable
    assert "hunter2" not in str(caught.value)
    assert len(receiver.requests) == 1  # the POST waits for the retry
