"""Pure delivery decisions: routing, HTTP classification, and message rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Snapshot, Transition
from watcher.core.render import check_template, render, render_group
from watcher.core.route import Route, Target, route
from watcher.core.text import GROUP_ERROR_BYTES, MESSAGE_TEXT_BYTES
from watcher.delivery.sinks._http import Reply, body_code, classify, redact_url
from watcher.fc.models import parse_invocation


def change(
    status: str,
    previous: str | None = "Running",
    *,
    service: str = "media",
    function: str = "transcode",
    qualifier: str | None = "LATEST",
    labels: dict[str, str] | None = None,
) -> Transition:
    ref = InvocationRef(FunctionRef(Api.FC2, function, service, qualifier), "job-1")
    before = Snapshot(status=previous) if previous else None
    result = decide.diff(
        before,
        Invocation.model_validate(
            {"status": status, "alreadyRetriedTimes": 3, "invocationErrorMessage": "boom"}
        ),
        ref=ref,
        observed_ms=0,
        labels=labels,
    )
    return result.transitions[-1]


ALERTS = Route.model_validate(
    {
        "match": {"type": "invocation.status_changed", "status": ["Failed", "Expired"]},
        "sinks": ["ding"],
        "severity": "critical",
    }
)
TEAM = Route.model_validate(
    {"match": {"labels": {"team": "video"}}, "sinks": ["hook"], "continue": True}
)
VIDEO_GLOB = Route.model_validate(
    {"match": {"function": "trans*", "service": "med?a"}, "sinks": ["am"]}
)
EVERYTHING = Route.model_validate({"sinks": ["file"]})


@pytest.mark.parametrize(
    ("routes", "transition", "expected"),
    [
        ([], change("Failed"), [Target("log")]),
        ([ALERTS, EVERYTHING], change("Failed"), [Target("ding", "critical")]),
        ([ALERTS, EVERYTHING], change("Succeeded"), [Target("file", "warning")]),
        (
            [TEAM, ALERTS],
            change("Failed", labels={"team": "video"}),
            [Target("hook", "warning"), Target("ding", "critical")],
        ),
        ([TEAM, ALERTS], change("Failed", labels={"team": "data"}), [Target("ding", "critical")]),
        ([VIDEO_GLOB], change("Running", function="transcode-hd"), [Target("am", "warning")]),
        ([VIDEO_GLOB], change("Running", function="thumbnail"), []),
        (
            [Route.model_validate({"match": {"previous_status": [None]}, "sinks": ["x"]})],
            change("Running", None),
            [Target("x", "warning")],
        ),
        (
            [Route.model_validate({"match": {"qualifier": "prod"}, "sinks": ["x"]})],
            change("Failed"),
            [],
        ),
    ],
    ids=[
        "no-routes",
        "first-match",
        "fallthrough",
        "continue",
        "label-miss",
        "glob",
        "glob-miss",
        "prev-null",
        "qualifier",
    ],
)
def test_route(routes: list[Route], transition: Transition, expected: list[Target]) -> None:
    """Routes match in order, first wins unless continue; no routes means the log sinks."""
    assert route([transition], routes, ["log"]) == {transition.id: expected}


def test_a_sink_gets_a_transition_once_even_if_two_routes_send_it() -> None:
    """Two continuing routes to the same sink yield one delivery (the first route's options)."""
    first = Route.model_validate({"sinks": ["hook"], "severity": "critical", "continue": True})
    second = Route.model_validate({"sinks": ["hook"], "severity": "info"})
    transition = change("Failed")
    assert route([transition], [first, second], []) == {transition.id: [Target("hook", "critical")]}


@pytest.mark.parametrize(
    ("reply", "code", "expected"),
    [
        (Reply(200, "ok", None), None, None),
        (Reply(204, "", None), None, None),
        (Reply(200, "{}", None), 0, None),
        (Reply(200, "{}", None), 310000, False),
        (Reply(200, "{}", None), 130101, True),
        (Reply(429, "", 9.0), None, True),
        (Reply(503, "", None), None, True),
        (Reply(501, "", None), None, False),
        (Reply(410, "", None), None, False),
        (Reply(302, "", None), None, False),
    ],
)
def test_classify(reply: Reply, code: int | None, expected: bool | None) -> None:
    """One classifier: None for delivered, else retryable or permanent."""
    error = classify(reply, body_code=code, throttle_codes=frozenset({130101}))
    assert (None if error is None else error.retryable) == expected


def test_body_code_and_redaction() -> None:
    """Robot codes are read from JSON bodies; URLs lose their path and query in errors."""
    assert body_code('{"errcode": 45009}', "errcode") == 45009
    assert body_code('{"code": 0}', "errcode", "code") == 0
    assert body_code("not json", "errcode") is None
    assert (
        redact_url("https://oapi.dingtalk.com/robot/send?access_token=SECRET")
        == "https://oapi.dingtalk.com/..."
    )
    assert (
        redact_url("https://user:pw@hooks.slack.com/services/T/B/X")
        == "https://hooks.slack.com/..."
    )


def test_render_one_and_a_template() -> None:
    """The message has a title, the retries and the error; a template replaces it."""
    transition = change("Failed")
    message = render(transition, region="cn-hangzhou", severity="critical")
    assert message.title == "media/transcode job-1: Failed after 3 retries"
    assert "error: boom" in message.lines
    assert message.link is not None and "cn-hangzhou" in message.link
    templated = render(
        transition, template="{invocationId} {status} ({retries})\nsee {console}", region="r"
    )
    assert templated.title == "job-1 Failed (3)"
    assert templated.lines[0].startswith("see https://")


@pytest.mark.parametrize(
    ("template", "message"), [("{nope}", "unknown field"), ("{status", "malformed")]
)
def test_bad_templates_are_refused(template: str, message: str) -> None:
    """A template with an unknown placeholder or bad braces is a config error naming it."""
    with pytest.raises(ValueError, match=message):
        check_template(template)


def test_group_summary() -> None:
    """A mixed burst names counts per outcome."""
    burst: list[Any] = [change("Failed") for _ in range(3)] + [change("Expired")]
    message = render_group(burst)
    assert message.title.startswith("4 transitions of transcode: 3 failed, 1 expired")
    assert len(message.lines) == 4


def _huge_failure() -> list[Transition]:
    """A Failed invocation whose error and eventDetail were a megabyte each, as parsed."""
    huge = "é" * 524_288  # a megabyte of two-byte characters: a cut must not split one
    body = {
        "status": "Failed",
        "invocationErrorMessage": huge,
        "invocationPayload": huge,
        "events": [{"eventId": 1, "status": "Failed", "eventDetail": huge}],
    }
    invocation = parse_invocation(json.dumps(body).encode())
    ref = InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), "job-1")
    return list(decide.diff(None, invocation, ref=ref, observed_ms=0).transitions)


def test_render_caps_oversized_text_with_a_marker() -> None:
    """Each free-text line of a message is at most ``MESSAGE_TEXT_BYTES`` and says it was cut;
    the template fields are capped the same way."""
    event, change = _huge_failure()
    lines = [*render(change).lines, *render(event).lines]
    capped = [line for line in lines if line.startswith(("error: ", "payload: ", "detail: "))]
    assert len(capped) == 5  # error and payload on both, the detail on the event
    for line in capped:
        label, _, text = line.partition(": ")
        assert text.endswith(f" -> {MESSAGE_TEXT_BYTES} bytes]"), label
        assert len(text.encode()) <= MESSAGE_TEXT_BYTES
        assert text.startswith("é")
    templated = render(event, template="{error}\n{eventDetail}")
    for text in (templated.title, *templated.lines):
        assert text.endswith(f" -> {MESSAGE_TEXT_BYTES} bytes]")
        assert len(text.encode()) <= MESSAGE_TEXT_BYTES
    group = render_group([change, change])
    for line in group.lines:
        error = line.partition(" (")[2].removesuffix(")")
        assert error.endswith(f" -> {GROUP_ERROR_BYTES} bytes]")
        assert len(error.encode()) <= GROUP_ERROR_BYTES


def test_select_heads_and_select_due_keep_per_invocation_order() -> None:
    """Single-row sinks send each invocation's head row only; batches stop behind a waiting row."""
    from watcher.delivery.dispatcher import select_due, select_heads
    from watcher.store.records import OutboxRow

    def row(seq: int, key: str, due_ms: int) -> OutboxRow:
        return OutboxRow(seq, f"tr_{seq}", key, 0, due_ms, 0)

    rows = [row(1, "a", 0), row(2, "a", 0), row(3, "b", 50), row(4, "b", 0), row(5, "c", 0)]
    assert [r.seq for r in select_heads(rows, 10, 10)] == [1, 5]
    assert [r.seq for r in select_heads(rows, 10, 1)] == [1]
    assert [r.seq for r in select_due(rows, 10, 10)] == [1, 2, 5]
    assert [r.seq for r in select_due(rows, 100, 2)] == [1, 2]
