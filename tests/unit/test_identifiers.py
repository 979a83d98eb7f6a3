"""Hostile identifiers are refused before any request exists, and never change a request path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.invocation import (
    IDENTIFIER_PATTERN,
    Api,
    FunctionRef,
    InvalidIdentifierError,
    InvocationRef,
)
from watcher.fc.credentials import Credentials
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.requests import Operation, request_base, request_path, sign
from watcher.fc.signing import SignatureScheme

HOSTILE = [
    "",
    "../../etc/passwd",
    "a/b",
    "..",
    "a b",
    "a?qualifier=x",
    "a#frag",
    "a%2Fb",
    "x" * 129,
    "déjà",
    "a\nb",
    "a\x00b",
    "${ALIBABA_CLOUD_ACCESS_KEY_SECRET}",
    "a;b",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["service", "function", "qualifier", "invocation_id"])
def test_hostile_identifiers_are_refused_with_the_value_named(field: str, value: str) -> None:
    """Every field refuses every hostile value, and the error names the field and the value."""
    parts = {"service": "svc", "function": "fn", "qualifier": None, "invocation_id": "id-1"}
    parts[field] = value
    with pytest.raises(InvalidIdentifierError) as caught:
        InvocationRef(
            FunctionRef(Api.FC2, str(parts["function"]), parts["service"], parts["qualifier"]),
            str(parts["invocation_id"]),
        )
    message = str(caught.value)
    assert field.replace("_", " ").split()[0] in message
    assert repr(value)[:40] in message or "..." in message
    assert "\n" not in message


def test_fc3_refuses_a_service() -> None:
    """FC 3.0 functions have no service: giving one is an error, not silently ignored."""
    with pytest.raises(InvalidIdentifierError, match="no service"):
        FunctionRef(Api.FC3, "fn", "svc")


def test_non_string_identifier_is_refused() -> None:
    """A number where a name belongs (a YAML slip) is refused rather than coerced."""
    with pytest.raises(InvalidIdentifierError):
        InvocationRef(FunctionRef(Api.FC2, "fn", "svc"), 12345)  # type: ignore[arg-type]


any_text = st.text(min_size=0, max_size=140)


@given(service=any_text, function=any_text, invocation_id=any_text)
def test_accepted_identifiers_map_one_to_one_onto_path_segments(
    service: str, function: str, invocation_id: str
) -> None:
    """Whatever the text, either it is refused, or each id is exactly one unchanged segment."""
    try:
        ref = InvocationRef(FunctionRef(Api.FC2, function, service), invocation_id)
    except InvalidIdentifierError:
        assert not all(IDENTIFIER_PATTERN.fullmatch(v) for v in (service, function, invocation_id))
        return
    path = request_path(Operation.GET, ref.function_ref, ref.invocation_id)
    assert path.split("/") == [
        "",
        "2021-04-06",
        "services",
        service,
        "functions",
        function,
        "stateful-async-invocations",
        invocation_id,
    ]


@pytest.mark.parametrize("scheme", list(SignatureScheme))
def test_prepared_request_puts_the_signed_path_and_query_on_the_wire(
    scheme: SignatureScheme,
) -> None:
    """The URL carries the path and the canonical query that were signed, and x-fc-account-id."""
    ref = InvocationRef(FunctionRef(Api.FC3, "fn", None, "LATEST"), "task-1")
    base = request_base(
        operation=Operation.STOP,
        method="PUT",
        function_ref=ref.function_ref,
        invocation_id=ref.invocation_id,
        query={"qualifier": "LATEST"},
        endpoint=resolve_endpoint("1234567890123456", "cn-hangzhou"),
        account_id="1234567890123456",
        credentials=Credentials("AK", "SK", "TOKEN"),
        scheme=scheme,
    )
    prepared = sign(
        base,
        http_date="Thu, 26 Nov 2026 08:00:00 GMT",
        iso_date="2026-11-26T08:00:00Z",
        nonce="0123456789abcdef0123456789abcdef",
    )
    assert str(prepared.url) == (
        "https://1234567890123456.cn-hangzhou.fc.aliyuncs.com"
        "/2023-03-30/functions/fn/async-tasks/task-1/stop?qualifier=LATEST"
    )
    assert prepared.headers["x-fc-account-id"] == "1234567890123456"
    if scheme is SignatureScheme.ACS3:
        assert prepared.headers["x-acs-action"] == "StopAsyncTask"
        assert prepared.headers["x-acs-security-token"] == "TOKEN"
        assert "x-fc-account-id" in prepared.headers["authorization"]
    else:
        assert prepared.headers["x-fc-security-token"] == "TOKEN"
        assert prepared.headers["authorization"].startswith("FC AK:")
    # Neither the signed request nor what it was built from shows the token, secret or signature.
    authorization = prepared.headers["authorization"]
    signature = authorization.partition("Signature=")[2] or authorization.partition(":")[2]
    for text in (repr(prepared), repr(base)):
        for secret in ("TOKEN", "SK", signature):
            assert secret not in text


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "https://123.cn-hangzhou.fc.aliyuncs.com"),
        ({"internal": True}, "https://123.cn-hangzhou-internal.fc.aliyuncs.com"),
        ({"url": "http://127.0.0.1:9000/"}, "http://127.0.0.1:9000"),
    ],
)
def test_endpoint_resolution(kwargs: dict[str, object], expected: str) -> None:
    """Public, internal and explicit endpoints resolve as documented."""
    assert resolve_endpoint("123", "cn-hangzhou", **kwargs).base_url == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("http://127.0.0.1:9000", False),
        ("http://localhost:9000", False),
        ("http://[::1]:9000", False),
        ("http://10.0.0.8:8080", True),
        ("http://proxy.internal", True),
        ("https://proxy.internal", False),
    ],
)
def test_plain_http_to_a_remote_host_is_flagged(url: str, insecure: bool) -> None:
    """Plain http is fine on loopback and worth a warning anywhere else."""
    assert resolve_endpoint("1", "r", url=url).is_insecure_remote is insecure


@pytest.mark.parametrize("url", ["ftp://x", "http://", "https://host/path", "host:80"])
def test_malformed_endpoint_is_refused(url: str) -> None:
    """An endpoint that is not scheme://host[:port] is refused with the value named."""
    with pytest.raises(ValueError, match="must look like"):
        resolve_endpoint("1", "r", url=url)
