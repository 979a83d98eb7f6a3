"""The emulator's answers in FC's shape: error bodies, per-API not-found and already-completed,
and the broken responses of injected faults.

This module only builds responses; it must not decide whether a request is refused or a fault
applies (``auth.verify`` and ``faults.plan_faults`` do that), nor read a scenario's timeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from watcher.core.invocation import Api
from watcher.devtools.emulator.auth import Denial
from watcher.devtools.emulator.scenario import ErrorStyle, FaultSpec

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_DEFAULT_CODES = {
    429: "ResourceExhausted",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ResourceThrottled",
    504: "GatewayTimeout",
}

# FC spells its error bodies three ways; a scenario picks one so clients meet each.
_MESSAGE_KEY = {"ErrorCode": "ErrorMessage", "errorCode": "errorMessage", "Code": "Message"}


def error(style: ErrorStyle, denial: Denial, headers: dict[str, str] | None = None) -> web.Response:
    """FC's error body for ``denial``, spelt in ``style``."""
    body = {style: denial.code, _MESSAGE_KEY[style]: denial.message}
    return web.json_response(body, status=denial.http_status, headers=headers)


def not_found(style: ErrorStyle, api: Api, invocation_id: str) -> web.Response:
    """The 404 each API answers for an invocation it does not know (yet)."""
    if api is Api.FC2:
        denial = Denial(
            404,
            "StatefulAsyncInvocationNotFound",
            f"stateful async invocation '{invocation_id}' does not exist",
        )
    else:
        denial = Denial(404, "AsyncTaskNotFound", f"async task '{invocation_id}' does not exist")
    return error(style, denial)


def already_completed(style: ErrorStyle, api: Api, invocation_id: str) -> web.Response:
    """The 412 each API answers to a stop of a finished invocation."""
    code = (
        "StatefulAsyncInvocationAlreadyCompleted" if api is Api.FC2 else "AsyncTaskAlreadyCompleted"
    )
    return error(style, Denial(412, code, f"'{invocation_id}' has already completed"))


async def injected(
    request: web.Request, handler: Handler, fault: FaultSpec, style: ErrorStyle
) -> web.StreamResponse:
    """What the client gets instead of (or made of) the real answer under ``fault``."""
    if fault.kind == "http_error":
        return _http_error(fault, style)
    if fault.kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing more can be sent on an aborted connection
    if fault.kind == "non_json":
        return web.Response(
            status=200,
            text="<html><body>502 Bad Gateway</body></html>",
            content_type="text/html",
        )
    if fault.kind == "oversized":
        filler = b"x" * fault.size_bytes
        body = b'{"status":"Running","invocationPayload":"' + filler + b'"}'
        return web.Response(status=200, body=body, content_type="application/json")
    real = await handler(request)  # "truncated": the real body, cut in half
    payload = real.body if isinstance(real, web.Response) else None
    whole = payload if isinstance(payload, bytes) else b"{}"
    return web.Response(status=200, body=whole[: len(whole) // 2], content_type="application/json")


def _http_error(fault: FaultSpec, style: ErrorStyle) -> web.Response:
    # Both spellings of the back-off hint clients meet: Retry-After in s, x-acs-retry-after in ms.
    headers: dict[str, str] = {}
    if fault.retry_after_s is not None:
        if fault.retry_after_header == "Retry-After":
            headers["Retry-After"] = str(int(fault.retry_after_s))
        else:
            headers["x-acs-retry-after"] = str(int(fault.retry_after_s * 1000))
    code = fault.code or _DEFAULT_CODES.get(fault.status, "InternalServerError")
    return error(style, Denial(fault.status, code, "injected fault"), headers)
