"""The FC emulator: an aiohttp app serving FC 2.0 and FC 3.0 task paths from a scenario.

Every request is verified as FC verifies it (signature, key, STS token, clock skew), then may be
hit by an injected fault, then is answered from the scenario's timeline at the emulator's clock.
``Emulator`` runs it on 127.0.0.1 for tests, the demo and the benchmark; ``fc-watcher emulate``
runs it from the command line. It must never be exposed beyond loopback: it is a test double.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web

from watcher.core.invocation import TERMINAL_STATUSES, Api
from watcher.devtools.emulator.auth import Denial, SignedRequest, verify
from watcher.devtools.emulator.faults import plan_faults
from watcher.devtools.emulator.scenario import FaultSpec, InvocationSpec, Scenario, state_at

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
InvocationKey = tuple[Api, str, str, str]  # api, service ("" for FC 3.0), function, id

_DEFAULT_CODES = {
    429: "ResourceExhausted",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ResourceThrottled",
    504: "GatewayTimeout",
}


def _header_lists(request: web.Request) -> dict[str, list[str]]:
    """Request headers by lower-case name, repeated names kept in order (one pass)."""
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return headers


class Clock(Protocol):
    """Seconds elapsed on the scenario's timeline."""

    def elapsed_s(self) -> float:
        """Seconds since the emulator started."""
        ...


class RealClock:
    """Scenario time follows the monotonic clock, optionally sped up."""

    def __init__(self, speed: float = 1.0) -> None:
        self._start = time.monotonic()
        self._speed = speed

    def elapsed_s(self) -> float:
        return (time.monotonic() - self._start) * self._speed


class ManualClock:
    """Scenario time moves only when told to: deterministic timelines for tests."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def elapsed_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        """Move scenario time forward."""
        self._now_s += seconds


class EmulatorApp:
    """The request handlers and their state; ``build()`` returns the aiohttp application."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.scenario = scenario
        self.clock: Clock = clock or RealClock()
        self._wall = wall
        self._epoch_ms = int(wall() * 1000)
        self._rng = random.Random(scenario.seed)
        self._stopped_at_s: dict[InvocationKey, float] = {}
        self._specs: dict[InvocationKey, InvocationSpec] = {}
        for spec in scenario.invocations:
            service = (spec.service or "") if spec.api is Api.FC2 else ""
            self._specs[(spec.api, service, spec.function, spec.id)] = spec
        self._step_times = {k: [step.at_s for step in v.timeline] for k, v in self._specs.items()}
        self._bodies: dict[InvocationKey, tuple[tuple[int, bool, bool], bytes | None]] = {}
        self.stats: Counter[str] = Counter()
        self._inflight = 0
        self._responses = 0
        self._run_id = uuid.uuid4().hex[:20]

    @property
    def epoch_ms(self) -> int:
        """Wall time (epoch ms) of scenario time 0: timelines' timestamps count from it."""
        return self._epoch_ms

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        fc2 = "/2021-04-06/services/{service}/functions/{function}/stateful-async-invocations"
        fc3 = "/2023-03-30/functions/{function}/async-tasks"
        app.router.add_get(fc2, self._list)
        app.router.add_get(fc2 + "/{invocation_id}", self._get)
        app.router.add_put(fc2 + "/{invocation_id}", self._stop)
        app.router.add_get(fc3, self._list)
        app.router.add_get(fc3 + "/{invocation_id}", self._get)
        app.router.add_put(fc3 + "/{invocation_id}/stop", self._stop)
        app.router.add_get("/-/stats", self._stats)
        app.on_response_prepare.append(self._stamp_request_id)
        return app

    # -- plumbing ------------------------------------------------------------------------

    async def _stamp_request_id(self, _: web.Request, response: web.StreamResponse) -> None:
        # Unique per response, like FC's; a counter under a per-run prefix costs less than uuid4.
        self._responses += 1
        response.headers.setdefault("X-Fc-Request-Id", f"{self._run_id}-{self._responses:012x}")

    def _error(self, denial: Denial, headers: dict[str, str] | None = None) -> web.Response:
        style = self.scenario.error_style
        message_key = {"ErrorCode": "ErrorMessage", "errorCode": "errorMessage", "Code": "Message"}
        body = {style: denial.code, message_key[style]: denial.message}
        return web.json_response(body, status=denial.http_status, headers=headers)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/-/"):
            return await handler(request)
        self._inflight += 1
        self.stats["max_inflight"] = max(self.stats["max_inflight"], self._inflight)
        try:
            return await self._serve(request, handler)
        finally:
            self._inflight -= 1

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats["requests"] += 1
        target = request.match_info.get("invocation_id", "")
        if target:
            self.stats[f"requests:{target}"] += 1
        plan = plan_faults(
            self.scenario.faults,
            elapsed_s=self.clock.elapsed_s(),
            request_number=self.stats["requests"],
            target=target,
            rng=self._rng,
        )
        if plan.latency_ms:
            await asyncio.sleep(plan.latency_ms / 1000)
        body = await request.read()
        signed = SignedRequest(
            method=request.method,
            raw_path=request.raw_path.partition("?")[0],
            query={key: request.query[key] for key in request.query},
            headers=_header_lists(request),
            body=body,
        )
        denial = verify(
            signed,
            self.scenario.credentials,
            now_s=self._wall(),
            max_skew_s=self.scenario.max_skew_s,
        )
        if denial is not None:
            self.stats["denied"] += 1
            return self._error(denial)
        if plan.failure is not None:
            self.stats[f"fault_{plan.failure.kind}"] += 1
            return await self._inject(request, handler, plan.failure)
        return await handler(request)

    async def _inject(
        self, request: web.Request, handler: Handler, fault: FaultSpec
    ) -> web.StreamResponse:
        if fault.kind == "http_error":
            headers: dict[str, str] = {}
            if fault.retry_after_s is not None:
                if fault.retry_after_header == "Retry-After":
                    headers["Retry-After"] = str(int(fault.retry_after_s))
                else:
                    headers["x-acs-retry-after"] = str(int(fault.retry_after_s * 1000))
            code = fault.code or _DEFAULT_CODES.get(fault.status, "InternalServerError")
            return self._error(Denial(fault.status, code, "injected fault"), headers)
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
        return web.Response(
            status=200, body=whole[: len(whole) // 2], content_type="application/json"
        )

    def _lookup(self, request: web.Request) -> tuple[Api, InvocationKey]:
        api = Api.FC2 if request.path.startswith("/2021-04-06/") else Api.FC3
        info = request.match_info
        key = (api, info.get("service", ""), info["function"], info.get("invocation_id", ""))
        return api, key

    def _render(self, spec: InvocationSpec, key: InvocationKey) -> dict[str, Any] | None:
        return state_at(
            spec,
            self.clock.elapsed_s(),
            epoch_ms=self._epoch_ms,
            account_id=self.scenario.account_id,
            region=self.scenario.region,
            stopped_at_s=self._stopped_at_s.get(key),
        )

    def _qualifier_matches(self, request: web.Request, spec: InvocationSpec) -> bool:
        wanted = request.query.get("qualifier")
        return wanted is None or wanted == spec.qualifier

    def _not_found(self, api: Api, invocation_id: str) -> web.Response:
        if api is Api.FC2:
            denial = Denial(
                404,
                "StatefulAsyncInvocationNotFound",
                f"stateful async invocation '{invocation_id}' does not exist",
            )
        else:
            denial = Denial(
                404, "AsyncTaskNotFound", f"async task '{invocation_id}' does not exist"
            )
        return self._error(denial)

    # -- handlers ------------------------------------------------------------------------

    def _body_bytes(self, spec: InvocationSpec, key: InvocationKey) -> bytes | None:
        """The Get body, re-rendered only when the timeline has moved (the benchmark polls
        thousands of unchanged invocations; the emulator must not be what it measures)."""
        elapsed = self.clock.elapsed_s()
        stopped = self._stopped_at_s.get(key)
        phase = (
            bisect.bisect_right(self._step_times[key], elapsed),
            spec.appears_at_s is not None and elapsed >= spec.appears_at_s,
            stopped is not None and stopped <= elapsed,
        )
        cached = self._bodies.get(key)
        if cached is not None and cached[0] == phase:
            return cached[1]
        body = self._render(spec, key)
        encoded = None if body is None else json.dumps(body).encode()
        self._bodies[key] = (phase, encoded)
        return encoded

    async def _get(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        spec = self._specs.get(key)
        body = (
            self._body_bytes(spec, key) if spec and self._qualifier_matches(request, spec) else None
        )
        if body is None:
            self.stats["not_found"] += 1
            return self._not_found(api, key[3])
        self.stats["served"] += 1
        return web.Response(body=body, content_type="application/json")

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        spec = self._specs.get(key)
        body = self._render(spec, key) if spec and self._qualifier_matches(request, spec) else None
        if body is None:
            return self._not_found(api, key[3])
        if body["status"] in TERMINAL_STATUSES:
            code = (
                "StatefulAsyncInvocationAlreadyCompleted"
                if api is Api.FC2
                else "AsyncTaskAlreadyCompleted"
            )
            return self._error(Denial(412, code, f"'{key[3]}' has already completed"))
        self._stopped_at_s[key] = self.clock.elapsed_s()
        return web.Response(status=200)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        query = request.query
        try:
            limit = int(query.get("limit", "50" if api is Api.FC2 else "20"))
            offset = int(query.get("nextToken") or "0")
            begin_ms = int(query.get("startedTimeBegin", "0"))
            end_ms = int(query.get("startedTimeEnd", str(2**62)))
        except ValueError:
            return self._error(Denial(400, "InvalidArgument", "a numeric parameter is malformed"))
        if not 1 <= limit <= 100 or offset < 0:
            return self._error(Denial(400, "InvalidArgument", "limit must be in [1, 100]"))
        prefix = query.get("invocationIdPrefix" if api is Api.FC2 else "prefix", "")
        include_payload = query.get("includePayload", "false").lower() == "true"
        items: list[dict[str, Any]] = []
        for spec_key, spec in self._specs.items():
            if spec_key[:3] != key[:3] or not spec.id.startswith(prefix):
                continue
            if not self._qualifier_matches(request, spec):
                continue
            body = self._render(spec, spec_key)
            if body is None or ("status" in query and body["status"] != query["status"]):
                continue
            if not begin_ms <= body["startedTime"] <= end_ms:
                continue
            if not include_payload:
                body.pop("invocationPayload", None)
                body.pop("taskPayload", None)
            items.append(body)
        items.sort(
            key=lambda item: item["startedTime"], reverse=query.get("sortOrderByTime") == "desc"
        )
        page = items[offset : offset + limit]
        next_token = str(offset + limit) if offset + limit < len(items) else ""
        listing = {"invocations" if api is Api.FC2 else "tasks": page, "nextToken": next_token}
        return web.json_response(listing)

    async def _stats(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(dict(self.stats))


class Emulator:
    """Runs an ``EmulatorApp`` on a loopback port; an async context manager."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.app = EmulatorApp(scenario, clock=clock, wall=wall)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL to point a client at."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        # In-flight handlers (say, an injected 30 s latency) must not hold up a stop.
        self._runner = web.AppRunner(
            self.app.build(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
