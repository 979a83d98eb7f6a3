"""The FC client over real loopback HTTP against the emulator: operations and every error class."""

from __future__ import annotations

import socket
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    STS_KEY_ID,
    STS_SECRET,
    STS_TOKEN,
    EmulatorFactory,
    make_client,
)
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.fc import errors
from watcher.fc.client import FcClient
from watcher.fc.credentials import Credentials
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.models import ListFilter
from watcher.fc.signing import SignatureScheme

FAIL_TIMELINE = [
    {"at_s": 0, "status": "Enqueued"},
    {"at_s": 1, "status": "Running"},
    {"at_s": 2, "status": "Retrying", "error": "UnhandledInvocationError", "detail": "{}"},
    {"at_s": 3, "status": "Running"},
    {"at_s": 4, "status": "Failed", "error": "UnhandledInvocationError: boom"},
]
FC2_FN = FunctionRef(Api.FC2, "demo-function", "demo-service", "LATEST")
FC3_FN = FunctionRef(Api.FC3, "demo-function", None, "LATEST")


def _invocation(id_: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "timeline": FAIL_TIMELINE, **extra}


@pytest.mark.parametrize("scheme", list(SignatureScheme))
async def test_get_fc2_follows_the_timeline(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, scheme: SignatureScheme
) -> None:
    """Both signature schemes are accepted, and Get returns the state at the emulator's clock."""
    emu = await start_emulator(invocations=[_invocation("job-1", payload='{"a":1}')])
    client = make_client(http_session, emu.url, scheme=scheme)
    ref = InvocationRef(FC2_FN, "job-1")
    first = await client.get_invocation(ref)
    assert first.status == "Enqueued"
    assert first.end_ms == 0
    emu.clock.advance(10)
    final = await client.get_invocation(ref)
    assert final.status == "Failed"
    assert final.is_terminal
    assert final.invocation_id == "job-1"
    assert final.service_name == "demo-service"
    assert final.payload == '{"a":1}'
    assert final.error_message == "UnhandledInvocationError: boom"
    assert final.already_retried_times == 1
    assert [e.status for e in final.events] == [
        "Enqueued",
        "Running",
        "Retrying",
        "Running",
        "Failed",
    ]
    assert [e.event_id for e in final.events] == [1, 2, 3, 4, 5]
    assert final.duration_ms == final.end_ms - final.started_ms == 4000


async def test_get_fc3_task_maps_to_the_same_model(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """An FC 3.0 async task parses into the same model, with taskId and functionArn mapped."""
    emu = await start_emulator(
        invocations=[_invocation("task-1", api="fc3", service=None, payload="p")]
    )
    emu.clock.advance(5)
    task = await make_client(http_session, emu.url).get_invocation(InvocationRef(FC3_FN, "task-1"))
    assert task.invocation_id == "task-1"
    assert task.status == "Failed"
    assert task.payload == "p"
    assert task.error_message == "UnhandledInvocationError: boom"
    assert task.function_arn == "acs:fc:cn-hangzhou:1234567890123456:functions/demo-function"


@pytest.mark.parametrize("scheme", list(SignatureScheme))
async def test_sts_credentials_are_signed_and_required(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, scheme: SignatureScheme
) -> None:
    """An STS key works with its token, and is refused without it or with a wrong one."""
    emu = await start_emulator(invocations=[_invocation("job-1")])
    ref = InvocationRef(FC2_FN, "job-1")
    good = make_client(
        http_session,
        emu.url,
        scheme=scheme,
        credentials=Credentials(STS_KEY_ID, STS_SECRET, STS_TOKEN),
    )
    assert (await good.get_invocation(ref)).status == "Enqueued"
    for token in (None, "wrong-token"):
        bad = make_client(
            http_session,
            emu.url,
            scheme=scheme,
            credentials=Credentials(STS_KEY_ID, STS_SECRET, token),
        )
        with pytest.raises(errors.AuthError) as caught:
            await bad.get_invocation(ref)
        assert caught.value.code == "InvalidSecurityToken"
        assert not caught.value.retryable


class _RotatingSource:
    """A credential source whose answer the test changes, as an STS refresh would."""

    def __init__(self, current: Credentials) -> None:
        self.current = current

    async def get(self) -> Credentials:
        return self.current


@pytest.mark.parametrize("scheme", list(SignatureScheme))
async def test_each_request_is_signed_with_the_credentials_of_the_moment(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, scheme: SignatureScheme
) -> None:
    """The client keeps what it built for a polled invocation, but never past a key change:
    a refreshed STS key is used from the next request on, and a revoked one fails at once."""
    emu = await start_emulator(invocations=[_invocation("job-1")])
    ref = InvocationRef(FC2_FN, "job-1")
    source = _RotatingSource(Credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET))
    client = FcClient(
        http_session,
        endpoint=resolve_endpoint("1234567890123456", "cn-hangzhou", url=emu.url),
        account_id="1234567890123456",
        credentials=source,
        scheme=scheme,
    )
    assert (await client.get_invocation(ref)).status == "Enqueued"
    source.current = Credentials(STS_KEY_ID, STS_SECRET, STS_TOKEN)
    assert (await client.get_invocation(ref)).status == "Enqueued"
    source.current = Credentials(STS_KEY_ID, STS_SECRET, "expired-token")
    with pytest.raises(errors.AuthError) as caught:
        await client.get_invocation(ref)
    assert caught.value.code == "InvalidSecurityToken"
    source.current = Credentials(ACCESS_KEY_ID, "revoked-secret")
    with pytest.raises(errors.AuthError) as caught:
        await client.get_invocation(ref)
    assert caught.value.code == "SignatureNotMatch"
    assert emu.stats["denied"] == 2


@pytest.mark.parametrize("fn_ref", [FC2_FN, FC3_FN], ids=["fc2", "fc3"])
async def test_list_follows_next_token_and_applies_filters(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, fn_ref: FunctionRef
) -> None:
    """List pages through nextToken, and every filter narrows the result as FC documents."""
    api_fields = {"api": fn_ref.api.value, "service": fn_ref.service}
    invocations = [
        {
            "id": f"job-{i}",
            "payload": f"p{i}",
            "timeline": [{"at_s": i, "status": "Running"}],
            **api_fields,
        }
        for i in range(7)
    ] + [{"id": "other-1", "timeline": [{"at_s": 0, "status": "Succeeded"}], **api_fields}]
    emu = await start_emulator(invocations=invocations)
    emu.clock.advance(100)
    client = make_client(http_session, emu.url)

    all_ids = [i.invocation_id async for i in client.list_invocations(fn_ref, ListFilter(limit=3))]
    assert sorted(all_ids) == sorted([f"job-{i}" for i in range(7)] + ["other-1"])
    assert emu.stats["requests"] == 3  # 8 items, 3 a page

    page = await client.list_invocations_page(
        fn_ref,
        ListFilter(
            id_prefix="job-",
            status="Running",
            sort_order_by_time="desc",
            limit=100,
            include_payload=True,
        ),
    )
    assert [i.invocation_id for i in page.invocations] == [f"job-{i}" for i in reversed(range(7))]
    assert page.invocations[0].payload == "p6"
    assert page.next_token == ""

    started = {i.invocation_id: i.started_ms for i in page.invocations}
    window = await client.list_invocations_page(
        fn_ref,
        ListFilter(
            started_time_begin_ms=started["job-2"],
            started_time_end_ms=started["job-4"],
            include_payload=False,
            sort_order_by_time="asc",
        ),
    )
    assert [i.invocation_id for i in window.invocations] == ["job-2", "job-3", "job-4"]
    assert window.invocations[0].payload == ""


@pytest.mark.parametrize("fn_ref", [FC2_FN, FC3_FN], ids=["fc2", "fc3"])
async def test_stop_then_get_shows_stopped(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, fn_ref: FunctionRef
) -> None:
    """Stop moves a running invocation to Stopped; stopping it again is a permanent error."""
    emu = await start_emulator(
        invocations=[
            {
                "id": "job-1",
                "api": fn_ref.api.value,
                "service": fn_ref.service,
                "timeline": [{"at_s": 0, "status": "Running"}],
            }
        ]
    )
    client = make_client(http_session, emu.url)
    ref = InvocationRef(fn_ref, "job-1")
    await client.stop_invocation(ref)
    stopped = await client.get_invocation(ref)
    assert stopped.status == "Stopped"
    assert [e.status for e in stopped.events][-2:] == ["Stopping", "Stopped"]
    with pytest.raises(errors.RequestError) as caught:
        await client.stop_invocation(ref)
    assert caught.value.http_status == 412
    assert caught.value.code.endswith("AlreadyCompleted")


@pytest.mark.parametrize(
    ("fn_ref", "code"),
    [(FC2_FN, "StatefulAsyncInvocationNotFound"), (FC3_FN, "AsyncTaskNotFound")],
    ids=["fc2", "fc3"],
)
async def test_not_found_until_the_invocation_appears(
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    fn_ref: FunctionRef,
    code: str,
) -> None:
    """A not-yet-registered invocation raises NotFoundError with FC's code and a request id."""
    emu = await start_emulator(
        invocations=[
            {
                "id": "late-1",
                "api": fn_ref.api.value,
                "service": fn_ref.service,
                "appears_at_s": 5,
                "timeline": [{"at_s": 5, "status": "Enqueued"}],
            }
        ]
    )
    client = make_client(http_session, emu.url)
    ref = InvocationRef(fn_ref, "late-1")
    with pytest.raises(errors.NotFoundError) as caught:
        await client.get_invocation(ref)
    assert caught.value.code == code
    assert caught.value.http_status == 404
    assert caught.value.request_id
    assert not caught.value.retryable
    emu.clock.advance(5)
    assert (await client.get_invocation(ref)).status == "Enqueued"


@pytest.mark.parametrize(
    ("fault", "error_class", "code", "retry_after_s"),
    [
        (
            {"kind": "http_error", "status": 429, "retry_after_s": 3},
            errors.ThrottledError,
            "ResourceExhausted",
            3.0,
        ),
        (
            {
                "kind": "http_error",
                "status": 503,
                "retry_after_s": 1.5,
                "retry_after_header": "x-acs-retry-after",
            },
            errors.ThrottledError,
            "ResourceThrottled",
            1.5,
        ),
        (
            {"kind": "http_error", "status": 400, "code": "Throttling.User"},
            errors.ThrottledError,
            "Throttling.User",
            None,
        ),
        ({"kind": "http_error", "status": 500}, errors.ServerError, "InternalServerError", None),
        ({"kind": "http_error", "status": 502}, errors.ServerError, "BadGateway", None),
        (
            {"kind": "http_error", "status": 400, "code": "InvalidArgument"},
            errors.RequestError,
            "InvalidArgument",
            None,
        ),
        (
            {"kind": "http_error", "status": 403, "code": "AccessDenied"},
            errors.AuthError,
            "AccessDenied",
            None,
        ),
    ],
    ids=["429-retry-after", "503-acs-retry-after", "throttling-code", "500", "502", "400", "403"],
)
async def test_http_errors_are_typed(
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    fault: dict[str, Any],
    error_class: type[errors.FcError],
    code: str,
    retry_after_s: float | None,
) -> None:
    """Each injected HTTP error becomes its typed error, retryable as classified."""
    emu = await start_emulator(invocations=[_invocation("job-1")], faults=[fault])
    with pytest.raises(errors.FcError) as caught:
        await make_client(http_session, emu.url).get_invocation(InvocationRef(FC2_FN, "job-1"))
    error = caught.value
    assert type(error) is error_class
    assert error.code == code
    assert error.request_id
    assert error.retryable is (error_class in (errors.ThrottledError, errors.ServerError))
    if isinstance(error, errors.ThrottledError):
        assert error.retry_after_s == retry_after_s


@pytest.mark.parametrize("style", ["ErrorCode", "errorCode", "Code"])
async def test_all_three_error_body_spellings_are_read(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, style: str
) -> None:
    """ErrorCode/ErrorMessage, errorCode/errorMessage and Code/Message all yield the code."""
    emu = await start_emulator(error_style=style)
    with pytest.raises(errors.NotFoundError) as caught:
        await make_client(http_session, emu.url).get_invocation(InvocationRef(FC2_FN, "nope"))
    assert caught.value.code == "StatefulAsyncInvocationNotFound"
    assert "does not exist" in caught.value.message


@pytest.mark.parametrize("scheme", list(SignatureScheme))
async def test_wrong_secret_is_signature_mismatch(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, scheme: SignatureScheme
) -> None:
    """A wrong secret gets 403 SignatureNotMatch: an AuthError, not retryable."""
    emu = await start_emulator(invocations=[_invocation("job-1")])
    client = make_client(
        http_session,
        emu.url,
        scheme=scheme,
        credentials=Credentials(ACCESS_KEY_ID, "not-the-secret"),
    )
    with pytest.raises(errors.AuthError) as caught:
        await client.get_invocation(InvocationRef(FC2_FN, "job-1"))
    assert caught.value.code == "SignatureNotMatch"
    assert not caught.value.retryable


async def test_unknown_key_is_refused_and_never_echoed(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """FC echoes an unknown key id in its message; the error the watcher raises masks it."""
    emu = await start_emulator()
    client = make_client(
        http_session, emu.url, credentials=Credentials("LTAI_UNKNOWN_KEY_7", "whatever-secret")
    )
    with pytest.raises(errors.AuthError) as caught:
        await client.get_invocation(InvocationRef(FC2_FN, "job-1"))
    assert caught.value.code == "InvalidAccessKeyID"
    assert "LTAI_UNKNOWN_KEY_7" not in str(caught.value)
    assert "whatever-secret" not in str(caught.value)


@pytest.mark.parametrize("scheme", list(SignatureScheme))
async def test_clock_skew_is_reported_as_such(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, scheme: SignatureScheme
) -> None:
    """A request dated 20 minutes ahead is refused with 403 and raised as ClockSkewError."""
    emu = await start_emulator(invocations=[_invocation("job-1")])
    client = make_client(http_session, emu.url, scheme=scheme, clock=lambda: time.time() + 1200)
    with pytest.raises(errors.ClockSkewError) as caught:
        await client.get_invocation(InvocationRef(FC2_FN, "job-1"))
    assert caught.value.http_status == 403
    assert isinstance(caught.value, errors.AuthError)


async def test_connection_reset_is_a_transport_error(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """A connection the server drops mid-request raises a retryable TransportError."""
    emu = await start_emulator(invocations=[_invocation("job-1")], faults=[{"kind": "reset"}])
    with pytest.raises(errors.TransportError) as caught:
        await make_client(http_session, emu.url).get_invocation(InvocationRef(FC2_FN, "job-1"))
    assert caught.value.retryable


async def test_timeout_is_a_transport_error(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """An answer slower than the timeout raises a retryable TransportError naming the timeout."""
    emu = await start_emulator(
        invocations=[_invocation("job-1")], faults=[{"kind": "latency", "latency_ms": 1000}]
    )
    client = make_client(http_session, emu.url, timeout_s=0.1)
    with pytest.raises(errors.TransportError, match=r"within 0\.1 s"):
        await client.get_invocation(InvocationRef(FC2_FN, "job-1"))


async def test_refused_connection_is_a_transport_error(http_session: aiohttp.ClientSession) -> None:
    """Nothing listening on the port: a retryable TransportError, no traceback material."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(http_session, f"http://127.0.0.1:{port}")
    with pytest.raises(errors.TransportError) as caught:
        await client.get_invocation(InvocationRef(FC2_FN, "job-1"))
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ({"kind": "non_json"}, "invocation body rejected"),
        ({"kind": "truncated"}, "invocation body rejected"),
        ({"kind": "oversized", "size_bytes": 50_000}, "over the 10000-byte cap"),
    ],
    ids=["non-json", "truncated", "oversized"],
)
async def test_bad_bodies_are_bad_response_errors(
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    fault: dict[str, Any],
    match: str,
) -> None:
    """A 2xx body that is not an invocation raises BadResponseError, never a made-up status."""
    emu = await start_emulator(invocations=[_invocation("job-1")], faults=[fault])
    client = make_client(http_session, emu.url, max_body_bytes=10_000)
    with pytest.raises(errors.BadResponseError, match=match) as caught:
        await client.get_invocation(InvocationRef(FC2_FN, "job-1"))
    assert caught.value.retryable


async def test_faults_by_schedule_and_probability_are_seeded(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """A windowed fault hits only inside its window; a 50% fault hits some but not all requests."""
    emu = await start_emulator(
        invocations=[_invocation("job-1")],
        faults=[
            {"kind": "http_error", "status": 500, "from_s": 10, "until_s": 20},
            {
                "kind": "http_error",
                "status": 503,
                "probability": 0.5,
                "match": "job-*",
                "from_s": 30,
            },
        ],
        seed=3,
    )
    client = make_client(http_session, emu.url)
    ref = InvocationRef(FC2_FN, "job-1")
    assert (await client.get_invocation(ref)).status == "Enqueued"
    emu.clock.advance(10)
    with pytest.raises(errors.ServerError):
        await client.get_invocation(ref)
    emu.clock.advance(10)
    assert (await client.get_invocation(ref)).status == "Failed"
    emu.clock.advance(10)
    outcomes = []
    for _ in range(40):
        try:
            await client.get_invocation(ref)
            outcomes.append("ok")
        except errors.ThrottledError:
            outcomes.append("throttled")
    assert 5 < outcomes.count("throttled") < 35
