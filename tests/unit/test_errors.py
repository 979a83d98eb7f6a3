"""classify_response: one row per case, from HTTP status, body and headers to a typed error."""

from __future__ import annotations

import json

import pytest

from watcher.core.backoff import retry_after_s
from watcher.fc import errors


def _body(code: str, message: str = "m", style: str = "ErrorCode") -> bytes:
    keys = {"ErrorCode": "ErrorMessage", "errorCode": "errorMessage", "Code": "Message"}
    return json.dumps({style: code, keys[style]: message}).encode()


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "retryable"),
    [
        (404, _body("StatefulAsyncInvocationNotFound"), {}, errors.NotFoundError, False),
        (404, _body("AsyncTaskNotFound", style="Code"), {}, errors.NotFoundError, False),
        (404, b"", {}, errors.NotFoundError, False),
        (400, _body("FunctionNotFound"), {}, errors.NotFoundError, False),
        (429, b"", {}, errors.ThrottledError, True),
        (503, _body("ResourceThrottled"), {}, errors.ThrottledError, True),
        (400, _body("Throttling.Api", style="Code"), {}, errors.ThrottledError, True),
        (403, _body("SignatureNotMatch", style="errorCode"), {}, errors.AuthError, False),
        (403, _body("InvalidAccessKeyID"), {}, errors.AuthError, False),
        (401, b"", {}, errors.AuthError, False),
        (403, _body("AccessDenied"), {}, errors.AuthError, False),
        (
            403,
            _body("", "the difference between the request time 'a' and the current time 'b'"),
            {},
            errors.ClockSkewError,
            False,
        ),
        (403, _body("RequestTimeTooSkewed"), {}, errors.ClockSkewError, False),
        (500, _body("InternalServerError"), {}, errors.ServerError, True),
        (502, b"<html>bad gateway</html>", {}, errors.ServerError, True),
        (504, b"", {}, errors.ServerError, True),
        (400, _body("InvalidArgument"), {}, errors.RequestError, False),
        (412, _body("StatefulAsyncInvocationAlreadyCompleted"), {}, errors.RequestError, False),
        (409, b"[1,2]", {}, errors.RequestError, False),
    ],
)
def test_classification(
    status: int,
    body: bytes,
    headers: dict[str, str],
    expected: type[errors.FcError],
    retryable: bool,
) -> None:
    """Each failed response maps to exactly one error class with the right retryability."""
    error = errors.classify_response(status, body, headers)
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.http_status == status


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Thu, 26 Nov 2026 08:00:30 GMT"}, 30.0),
        ({"Retry-After": "Thu, 26 Nov 2026 07:00:00 GMT"}, 0.0),
        ({"x-acs-retry-after": "2500"}, 2.5),
        ({"x-acs-retry-after": "0"}, None),
        ({"x-acs-retry-after": "soon"}, None),
        ({"Retry-After": "garbage"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After as seconds or an HTTP date, and x-acs-retry-after in milliseconds."""
    now_s = 1795680000.0  # Thu, 26 Nov 2026 08:00:00 GMT
    assert retry_after_s(headers, now_s) == expected


def test_request_id_and_code_are_in_the_message() -> None:
    """What a support ticket needs is in str(error): code, HTTP status, request id."""
    error = errors.classify_response(500, _body("InternalServerError"), {"X-Fc-Request-Id": "r-1"})
    assert "code=InternalServerError" in str(error)
    assert "http=500" in str(error)
    assert "request_id=r-1" in str(error)


def test_secrets_in_a_server_message_are_masked() -> None:
    """A credential echoed back by the server is masked in the error."""
    body = _body("InvalidAccessKeyID", "invalid access key ID 'LTAI_SECRETISH'")
    error = errors.classify_response(403, body, {}, secrets=("LTAI_SECRETISH",))
    assert "LTAI_SECRETISH" not in str(error)
    assert "***" in str(error)
