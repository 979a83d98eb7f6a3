"""Parsing FC bodies: lenient where the API is vague, strict where a guess would invent an alert."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.invocation import Api, Invocation, Status
from watcher.core.text import STATE_TEXT_BYTES
from watcher.devtools.emulator.scenario import InvocationSpec, Step, state_at
from watcher.fc.errors import BadResponseError
from watcher.fc.models import parse_invocation, parse_page


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({"status": "Running"}, "status", "Running"),
        ({"status": "Suspended"}, "status", "Suspended"),
        ({"status": "Running", "unknownKey": {"x": 1}}, "status", "Running"),
        ({"status": "Running", "endTime": None}, "end_ms", 0),
        ({"status": "Running", "startedTime": "1633449590000"}, "started_ms", 1633449590000),
        (
            {"status": "Running", "startedTime": "2021-10-05T16:39:50Z"},
            "started_ms",
            1633451990000,
        ),
        ({"status": "Running", "events": None}, "events", ()),
        ({"status": "Running", "invocationErrorMessage": None}, "error_message", ""),
        ({"status": "Failed", "taskErrorMessage": "boom"}, "error_message", "boom"),
        ({"status": "Failed", "taskId": "t-1"}, "invocation_id", "t-1"),
        ({"status": "Failed", "alreadyRetriedTimes": None}, "already_retried_times", 0),
    ],
)
def test_lenient_parsing(body: dict[str, Any], field: str, expected: object) -> None:
    """Unknown keys, nulls, numeric strings and ISO times parse; unknown statuses are kept."""
    assert getattr(parse_invocation(json.dumps(body).encode()), field) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"<html>502</html>",
        b"[]",
        b"null",
        b'"Running"',
        b"{}",
        b'{"status": ""}',
        b'{"status": 3}',
        b'{"status": null}',
        b'{"status": "Running", "events": [{"status": "x"}]}',
        b'{"status": "Running", "startedTime": "yesterday"}',
        b'{"status": "Running"',
        b"\xff\xfe",
        b'\xff{"status": "Running"}',
        b'{"status": "Running"}\xff',
        b'{"status": "Running", "x": "\xff}',
        b"[" * 100_000,
        b'{"status": "\\ud800"}'[:-2],
    ],
)
def test_bad_bodies_are_refused(body: bytes) -> None:
    """A body without a JSON object and a status string is a BadResponseError, never a status."""
    with pytest.raises(BadResponseError):
        parse_invocation(body)


def _all_text(invocation: Invocation) -> list[str]:
    fields = [invocation.status, invocation.error_message, invocation.payload]
    return fields + [t for e in invocation.events for t in (e.status, e.event_detail)]


@pytest.mark.parametrize(
    ("body", "detail", "error"),
    [
        (
            b'{"status":"Failed","events":[{"eventId":1,"eventDetail":"a\xff\xfeb"}]}',
            "a\ufffd\ufffdb",
            "",
        ),
        (b'{"status":"Failed","events":[{"eventId":1,"eventDetail":"a\\ud800b"}]}', "a\ufffdb", ""),
        (
            b'{"status":"Failed","events":[{"eventId":1,"eventDetail":"\\udc00\\ud800"}]}',
            "\ufffd\ufffd",
            "",
        ),
        (
            b'{"status":"Failed","invocationErrorMessage":"\xc3(\\ud83d\\ude00"}',
            "",
            "\ufffd(\U0001f600",
        ),
        (b'{"status":"Failed","invocationErrorMessage":"ok","n\xff":"\\udfff"}', "", "ok"),
        (
            b'{"status":"Failed","invocationErrorMessage":"caf\xc3\xa9 \xe2\x82"}',
            "",
            "caf\xe9 \ufffd",
        ),
    ],
    ids=[
        "invalid-utf8",
        "lone-high-surrogate",
        "reversed-pair",
        "cut-sequence-and-a-real-pair",
        "only-in-an-unknown-key",
        "truncated-multibyte",
    ],
)
def test_undecodable_text_is_kept_as_replacement_characters(
    body: bytes, detail: str, error: str
) -> None:
    """Invalid UTF-8 and escaped lone surrogates become U+FFFD: the status is read (a Failed is
    never hidden behind a bad byte), and every string can be encoded wherever it goes next."""
    invocation = parse_invocation(body)
    assert invocation.status == "Failed"
    assert invocation.error_message == error
    assert [e.event_detail for e in invocation.events] == ([detail] if detail else [])
    for text in _all_text(invocation):
        text.encode("utf-8")  # SQLite, webhook bodies and log files all encode it


def test_a_bad_byte_in_an_ignored_key_parses_as_without_it() -> None:
    """The lenient reading validates exactly as the strict one: same fields, same defaults."""
    clean = {"status": "Running", "startedTime": "2021-10-05T16:39:50Z", "events": None}
    dirty = json.dumps(clean).encode()[:-1] + b', "junk": "\xff"}'
    assert parse_invocation(dirty) == parse_invocation(json.dumps(clean).encode())
    page = parse_page(b'{"tasks": [{"status": "Failed", "taskErrorMessage": "\\ud800"}]}')
    assert page.invocations[0].error_message == "\ufffd"


def test_oversized_text_is_cut_where_it_is_parsed() -> None:
    """A megabyte eventDetail, error or payload is kept as its first ``STATE_TEXT_BYTES``,
    marked; the status, the ids and the other events are untouched."""
    huge = "x" * 1_048_576
    body = {
        "status": "Failed",
        "invocationId": "job-1",
        "invocationErrorMessage": huge,
        "invocationPayload": huge,
        "returnPayload": huge,
        "events": [
            {"eventId": 1, "status": "Running", "eventDetail": "short"},
            {"eventId": 2, "status": "Failed", "eventDetail": huge},
        ],
    }
    invocation = parse_invocation(json.dumps(body).encode())
    marker = "… [truncated 1048576 -> 8192 bytes]"
    for text in (invocation.error_message, invocation.payload, invocation.return_payload):
        assert text.endswith(marker)
        assert len(text.encode()) <= STATE_TEXT_BYTES
    assert invocation.events[1].event_detail.endswith(marker)
    assert (invocation.status, invocation.invocation_id) == ("Failed", "job-1")
    assert (invocation.events[0].event_id, invocation.events[0].event_detail) == (1, "short")
    page = parse_page(json.dumps({"invocations": [body]}).encode())
    assert page.invocations[0] == invocation


def test_unknown_status_is_not_terminal() -> None:
    """An unknown status is kept verbatim and never counts as terminal."""
    invocation = parse_invocation(b'{"status": "Archived"}')
    assert invocation.status == "Archived"
    assert not invocation.is_terminal


def test_page_accepts_both_list_shapes() -> None:
    """FC 2.0 lists under 'invocations', FC 3.0 under 'tasks'; a missing nextToken is the end."""
    fc2 = parse_page(b'{"invocations": [{"status": "Running"}], "nextToken": "2"}')
    fc3 = parse_page(b'{"tasks": [{"status": "Failed", "taskId": "t"}]}')
    assert [i.status for i in fc2.invocations] == ["Running"]
    assert fc2.next_token == "2"
    assert fc3.invocations[0].invocation_id == "t"
    assert fc3.next_token == ""


names = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
statuses = st.one_of(
    st.sampled_from([status.value for status in Status]),
    st.text(min_size=1, max_size=20),
)
steps = st.builds(
    Step,
    at_s=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    status=statuses,
    error=st.none() | st.text(max_size=50),
    detail=st.none() | st.text(max_size=50),
    return_payload=st.none() | st.text(max_size=50),
    event=st.booleans(),
)
specs = st.builds(
    InvocationSpec,
    id=names,
    api=st.sampled_from(list(Api)),
    service=names,
    function=names,
    qualifier=names,
    payload=st.text(max_size=100),
    appears_at_s=st.just(0.0),
    timeline=st.lists(steps, max_size=12).map(lambda s: tuple(sorted(s, key=lambda x: x.at_s))),
    request_id=st.text(max_size=20),
    instance_id=st.text(max_size=20),
    destination_status=st.text(max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(
    spec=specs,
    elapsed_s=st.floats(min_value=0, max_value=20_000, allow_nan=False),
    epoch_ms=st.integers(min_value=0, max_value=2**41),
    stopped_at_s=st.none() | st.floats(min_value=0, max_value=20_000, allow_nan=False),
)
def test_every_emulator_body_round_trips(
    spec: InvocationSpec, elapsed_s: float, epoch_ms: int, stopped_at_s: float | None
) -> None:
    """Any body the emulator can serve parses back into exactly the fields it holds."""
    body = state_at(
        spec,
        elapsed_s,
        epoch_ms=epoch_ms,
        account_id="1234567890123456",
        region="cn-hangzhou",
        stopped_at_s=stopped_at_s,
    )
    assert body is not None
    parsed = parse_invocation(json.dumps(body).encode())
    fc2 = spec.api is Api.FC2
    assert parsed.status == body["status"]
    assert parsed.invocation_id == body["invocationId" if fc2 else "taskId"]
    assert parsed.error_message == body["invocationErrorMessage" if fc2 else "taskErrorMessage"]
    assert parsed.payload == body["invocationPayload" if fc2 else "taskPayload"]
    assert parsed.service_name == body.get("serviceName", "")
    assert parsed.function_arn == body.get("functionArn", "")
    assert parsed.started_ms == body["startedTime"]
    assert parsed.end_ms == body["endTime"]
    assert parsed.duration_ms == body["durationMs"]
    assert parsed.already_retried_times == body["alreadyRetriedTimes"]
    assert parsed.return_payload == body["returnPayload"]
    assert parsed.destination_status == body["destinationStatus"]
    assert [(e.event_id, e.status, e.timestamp_ms, e.event_detail) for e in parsed.events] == [
        (e["eventId"], e["status"], e["timestamp"], e["eventDetail"]) for e in body["events"]
    ]
