"""The status page: routes and handlers, served on the daemon's ``http.listen`` endpoint.

Every page is rendered on the server from one read of the state DB (``reader``) and the
page's live region is fetched again every couple of seconds by a small script, which swaps
in the server-rendered, escaped fragment (``?fragment=1``): no page reload, no front-end
build, no data ever turned into markup in the browser. Reads and rendering run on the
reader's thread, so a page costs the daemon's event loop only the hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from watcher.config.models import HttpSettings
from watcher.core.clock import Clock, SystemClock
from watcher.daemon.api import TokenError, resolve_token
from watcher.daemon.console import views
from watcher.daemon.console.actions import ActionHandlers, ConsoleActions
from watcher.daemon.console.auth import SESSION_COOKIE, Guard
from watcher.daemon.console.minutes import MinuteCounts
from watcher.daemon.console.params import ParamError, list_query, page_number
from watcher.daemon.console.reader import ConsoleReader
from watcher.daemon.console.templating import environment, query_url, render
from watcher.store.errors import StateStoreError

_log = structlog.get_logger("watcher.console")

# The page's own script and style only: an inline script or handler that slipped into the
# markup would not run, and nothing is loaded from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
Query = Callable[[sqlite3.Connection], Any]


class Console:
    """The status page of one state DB. ``actions`` None (or no token): read-only."""

    def __init__(
        self,
        state_path: Path,
        *,
        token: str | None = None,
        actions: ConsoleActions | None = None,
        clock: Clock | None = None,
        refresh_s: float = 2.0,
        chart_hours: int = 6,
    ) -> None:
        self._reader = ConsoleReader(state_path)
        self._guard = Guard(token)
        self._actions = actions
        self._clock = clock or SystemClock()
        self._refresh_ms = int(refresh_s * 1000)
        self._chart_hours = chart_hours
        self._minutes = MinuteCounts()
        self._warming: asyncio.Task[None] | None = None
        self._env = environment()
        files = resources.files("watcher.daemon.console").joinpath("templates")
        self._static = {name: files.joinpath(name).read_bytes() for name in _STATIC}
        self._handlers = ActionHandlers(self._guard, actions, self._clock, self._fail)

    def __repr__(self) -> str:
        return f"Console({self._reader!r}, {self._guard!r})"

    def set_token(self, token: str | None) -> None:
        """The bearer token actions need from now on (None: read-only)."""
        self._guard.set_token(token)

    def reload_token(self, http: HttpSettings) -> None:
        """A reload: the new token applies at once; an unreadable file keeps the old one."""
        try:
            self.set_token(resolve_token(http))
        except TokenError as exc:
            _log.error("console_reload_token_failed", error=str(exc), kept="old token")

    def register(self, app: web.Application) -> None:
        """Add the console's routes to ``app`` (the endpoint's application)."""
        app.router.add_get("/", self._overview)
        app.router.add_get("/invocations", self._invocations)
        app.router.add_get("/invocations/{key}", self._invocation)
        app.router.add_get("/outbox", self._outbox)
        app.router.add_get("/silences", self._silences)
        app.router.add_get("/login", self._login_page)
        app.router.add_get("/static/{name}", self._static_file)
        self._handlers.register(app)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._cleanup)

    async def _start(self, _: web.Application) -> None:
        # The chart's first read is the slowest (a few hours of transitions): done now, in the
        # background on the console's thread, so neither the endpoint's start nor the first
        # page waits for it. A state not there yet is the first page's to report.
        self._warming = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        now_ms = self._clock.wall_ms()
        since_ms = now_ms - self._chart_hours * 3_600_000
        with contextlib.suppress(StateStoreError):
            await self._reader.read(lambda db: self._minutes.read(db, since_ms, now_ms))

    async def _cleanup(self, _: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the console's connection and thread (also done when the app is cleaned up)."""
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
            self._warming = None
        await self._reader.close()

    # -- rendering ----------------------------------------------------------------------------

    def _common(self, request: web.Request, now_ms: int) -> dict[str, Any]:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        signed_in = self._guard.session_valid(cookie, now_ms)
        params = {name: value for name, value in request.query.items() if name != "fragment"}
        return {
            "now_ms": now_ms,
            "signed_in": signed_in,
            "can_sign_in": self._guard.enabled and self._actions is not None,
            "can_act": signed_in and self._actions is not None,
            "csrf": self._guard.csrf_token(cookie) if signed_in else "",
            # The path as sent (still quoted): a key's slashes are one segment.
            "here": query_url(request.rel_url.raw_path, params),
            "live_src": query_url(request.rel_url.raw_path, {**params, "fragment": "1"}),
            "refresh_ms": self._refresh_ms,
        }

    async def _render(
        self, request: web.Request, name: str, context: Mapping[str, Any], status: int = 200
    ) -> web.Response:
        block = "live" if request.query.get("fragment") == "1" else None
        page = {**self._common(request, self._clock.wall_ms()), **context}
        body = await self._reader.run(partial(render, self._env, name, page, block=block))
        return web.Response(
            text=body, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
        )

    async def _fail(self, request: web.Request, status: int, message: str) -> web.Response:
        return await self._render(request, "error.html", {"message": message}, status)

    async def _page(self, request: web.Request, name: str, query: Query) -> web.Response:
        """Read ``query`` in one transaction and render it into template ``name``."""
        try:
            context = await self._reader.read(query)
        except StateStoreError as exc:
            _log.warning("console_read_failed", error=str(exc))
            return await self._fail(request, 503, f"the state DB cannot be read: {exc}")
        if context is None:
            return await self._fail(request, 404, "no such invocation in the state")
        return await self._render(request, name, context)

    # -- pages --------------------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.Response:
        query = partial(
            views.overview,
            now_ms=self._clock.wall_ms(),
            hours=self._chart_hours,
            minutes=self._minutes,
        )
        return await self._page(request, "overview.html", query)

    async def _invocations(self, request: web.Request) -> web.Response:
        try:
            wanted = list_query(request.query, self._clock.wall_ms())
        except ParamError as exc:
            return await self._fail(request, 400, str(exc))
        return await self._page(
            request, "invocations.html", partial(views.invocation_list, query=wanted)
        )

    async def _invocation(self, request: web.Request) -> web.Response:
        query = partial(views.invocation, key=request.match_info["key"])
        return await self._page(request, "invocation.html", query)

    async def _outbox(self, request: web.Request) -> web.Response:
        sink = request.query.get("sink") or None
        state = request.query.get("state") or "pending"
        try:
            page = page_number(request.query.get("page"))
        except ParamError as exc:
            return await self._fail(request, 400, str(exc))
        if state not in views.OUTBOX_STATES:
            return await self._fail(request, 400, "state must be pending, dead or sent")
        query = partial(views.outbox, sink=sink, state=state, page=page)
        return await self._page(request, "outbox.html", query)

    async def _silences(self, request: web.Request) -> web.Response:
        query = partial(views.silences, now_ms=self._clock.wall_ms())
        return await self._page(request, "silences.html", query)

    async def _login_page(self, request: web.Request) -> web.Response:
        wanted = request.query.get("next", "/")
        return await self._render(request, "login.html", {"next": wanted})

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        headers = {**_HEADERS, "Cache-Control": "max-age=300"}
        return web.Response(body=self._static[name], content_type=_STATIC[name], headers=headers)


def add_console_routes(app: web.Application, console: Console) -> None:
    """Serve ``console`` on ``app``: ``/``, ``/invocations``, ``/outbox``, ``/silences``..."""
    console.register(app)
