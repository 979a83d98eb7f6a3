"""The FC emulator's aiohttp app: routes FC 2.0 and FC 3.0 task paths and answers from a scenario.

Every request is verified as FC verifies it (signature, key, STS token, clock skew), then may be
hit by an injected fault, then is answered from the scenario's timeline at the emulator's clock.
This module routes and keeps the per-run state (stats, the clock); the invocations, their stops
and cached bodies live in ``catalog``, response shapes in ``responses``, the List rules in
``listing``, run-time submissions in ``control``, and serving on a port in ``server``. It must
never be exposed beyond loopback: it is a test double.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from watcher.core.invocation import TERMINAL_STATUSES, Api
from watcher.devtools.emulator import responses, tokens
from watcher.devtools.emulator.auth import Denial, SignedRequest, verify
from watcher.devtools.emulator.catalog import Catalog
from watcher.devtools.emulator.clock import Clock, RealClock
from watcher.devtools.emulator.control import already_exists, parse_submission
from watcher.devtools.emulator.faults import plan_faults
from watcher.devtools.emulator.index import Entry, InvocationKey, SortKey
from watcher.devtools.emulator.listing import (
    RETENTION_MS,
    ListRequest,
    page_body,
    parse_list_request,
    select_page,
)
from watcher.devtools.emulator.responses import Handler
from watcher.devtools.emulator.scenario import Scenario
from watcher.devtools.emulator.timeline import epoch_at


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
        self.catalog = Catalog(scenario, epoch_ms=self._epoch_ms)
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
        app.router.add_post("/-/submit", self._submit)
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

    def _found(self, request: web.Request, key: InvocationKey) -> Entry | None:
        """The invocation under ``key`` if it exists and matches the request's qualifier."""
        entry = self.catalog.entry(key)
        wanted = request.query.get("qualifier")
        if entry is None or (wanted is not None and wanted != entry.spec.qualifier):
            return None
        return entry

    # -- handlers ------------------------------------------------------------------------

    async def _get(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        entry = self._found(request, key)
        now_s = self.clock.elapsed_s()
        body = None if entry is None else self.catalog.body_bytes(entry, now_s)
        if body is None:
            self.stats["not_found"] += 1
            return responses.not_found(self.scenario.error_style, api, key[3])
        self.stats["served"] += 1
        return web.Response(body=body, content_type="application/json")

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        entry = self._found(request, key)
        now_s = self.clock.elapsed_s()
        body = None if entry is None else self.catalog.body(entry, now_s)
        if entry is None or body is None:
            return responses.not_found(self.scenario.error_style, api, key[3])
        if body["status"] in TERMINAL_STATUSES:
            return responses.already_completed(self.scenario.error_style, api, key[3])
        self.catalog.stop(entry, now_s)
        return web.Response(status=200)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        api, key = self._lookup(request)
        mode = self.scenario.list_tokens
        query = parse_list_request(api, request.query, tokens=mode)
        if isinstance(query, Denial):
            return self._error(query)
        now_s = self.clock.elapsed_s()
        index = self.catalog.function(key[:3])
        if index is None:
            return web.Response(body=page_body(api, [], ""), content_type="application/json")
        page = select_page(
            index.candidates(now_s, query.status),
            query,
            tokens=mode,
            floor_ms=epoch_at(self._epoch_ms, now_s) - RETENTION_MS,
            accept=self._qualifier_filter(query, index.by_sort_key),
        )
        include_payload = query.include_payload
        items = [
            self.catalog.list_item(index.by_sort_key[k], now_s, include_payload=include_payload)
            for k in page.keys
        ]
        token = "" if page.next_cursor is None else tokens.encode(page.next_cursor)
        self.stats["listed"] += len(items)
        return web.Response(body=page_body(api, items, token), content_type="application/json")

    @staticmethod
    def _qualifier_filter(
        query: ListRequest, entries: dict[SortKey, Entry]
    ) -> Callable[[SortKey], bool] | None:
        """The List filter the sort keys cannot apply: the qualifier is the spec's."""
        wanted = query.qualifier
        if wanted is None:
            return None
        return lambda sort_key: entries[sort_key].spec.qualifier == wanted

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        now_s = self.clock.elapsed_s()
        spec = parse_submission(await request.read(), now_s)
        if isinstance(spec, Denial):
            return self._error(spec)
        entry = self.catalog.submit(spec, now_s)
        if entry is None:
            return self._error(already_exists(spec.api, spec.id))
        self.stats["submitted"] += 1
        return web.json_response({"id": spec.id, "startedTime": entry.sort_key[0]})

    async def _stats(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(dict(self.stats))
