"""The FC emulator's aiohttp app: routes FC 2.0 and FC 3.0 task paths and answers from a scenario.

Every request is verified as FC verifies it (signature, key, STS token, clock skew), then may be
hit by an injected fault, then is answered from the scenario's timeline at the emulator's clock.
This module routes and keeps the per-run state (stops, stats, cached bodies); response shapes
live in ``responses``, the List rules in ``listing``, and serving on a port in ``server``. It
must never be exposed beyond loopback: it is a test double.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from watcher.core.invocation import TERMINAL_STATUSES, Api
from watcher.devtools.emulator import responses
from watcher.devtools.emulator.auth import Denial, SignedRequest, verify
from watcher.devtools.emulator.clock import Clock, RealClock
from watcher.devtools.emulator.faults import plan_faults
from watcher.devtools.emulator.listing import list_page, parse_list_query
from watcher.devtools.emulator.responses import Handler
from watcher.devtools.emulator.scenario import InvocationSpec, Scenario, state_at

InvocationKey = tuple[Api, str, str, str]  # api, service ("" for FC 3.0), function, id


def _header_lists(request: web.Request) -> dict[str, list[str]]:
    """Request headers by lower-case name, repeated names kept in order (one pass)."""
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return headers


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

    def _error(self, denial: Denial) -> web.Response:
        return responses.error(self.scenario.error_style, denial)

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
        denial = await self._authenticate(request)
        if denial is not None:
            self.stats["denied"] += 1
            return self._error(denial)
        if plan.failure is not None:
            self.stats[f"fault_{plan.failure.kind}"] += 1
            style = self.scenario.error_style
            return await responses.injected(request, handler, plan.failure, style)
        return await handler(request)

    async def _authenticate(self, request: web.Request) -> Denial | None:
        signed = SignedRequest(
            method=request.method,
            raw_path=request.raw_path.partition("?")[0],
            query={key: request.query[key] for key in request.query},
            headers=_header_lists(request),
            body=await request.read(),
        )
        return verify(
            signed,
            self.scenario.credentials,
            now_s=self._wall(),
            max_skew_s=self.scenario.max_skew_s,
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

    # -- handlers ------------------------------------------------------------------------

    async def _get(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        spec = self._specs.get(key)
        body = (
            self._body_bytes(spec, key) if spec and self._qualifier_matches(request, spec) else None
        )
        if body is None:
            self.stats["not_found"] += 1
            return responses.not_found(self.scenario.error_style, api, key[3])
        self.stats["served"] += 1
        return web.Response(body=body, content_type="application/json")

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        spec = self._specs.get(key)
        body = self._render(spec, key) if spec and self._qualifier_matches(request, spec) else None
        if body is None:
            return responses.not_found(self.scenario.error_style, api, key[3])
        if body["status"] in TERMINAL_STATUSES:
            return responses.already_completed(self.scenario.error_style, api, key[3])
        self._stopped_at_s[key] = self.clock.elapsed_s()
        return web.Response(status=200)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        query = parse_list_query(api, request.query)
        if isinstance(query, Denial):
            return self._error(query)
        bodies: list[dict[str, Any]] = []
        for spec_key, spec in self._specs.items():
            if spec_key[:3] != key[:3] or not spec.id.startswith(query.prefix):
                continue
            if not self._qualifier_matches(request, spec):
                continue
            body = self._render(spec, spec_key)
            if body is not None:
                bodies.append(body)
        return web.json_response(list_page(api, query, bodies))

    async def _stats(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(dict(self.stats))
