"""The console's write actions: sign in and out, add or expire a silence, redeliver a dead
letter. Each is a POST that the guard lets through (``auth``) and the daemon carries out
through ``ConsoleActions``, so the console itself never writes to the state DB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog
from aiohttp import web

from watcher.core.clock import Clock
from watcher.core.silence import SilenceError
from watcher.daemon.console.auth import SESSION_COOKIE, SESSION_MS, Guard, same_origin
from watcher.daemon.console.forms import FormError, silence_request, text_field
from watcher.daemon.silences import ActiveSilences
from watcher.store.errors import StateStoreError
from watcher.store.protocols import StatusReader

_log = structlog.get_logger("watcher.console")

Fail = Callable[[web.Request, int, str], Awaitable[web.Response]]


class ConsoleActions(Protocol):
    """What the console asks the daemon to do; the daemon wires its store's methods here."""

    async def add_silence(
        self,
        *,
        matchers: Mapping[str, Any],
        starts_ms: int,
        ends_ms: int,
        comment: str,
        author: str,
    ) -> str:
        """Record a silence; ``matchers`` is JSON-ready, in the route matchers' shape (type,
        status, previous_status lists; service, function, qualifier globs; labels). Returns
        the new silence's id; a ``SilenceError`` refuses it (its message is shown)."""
        ...

    async def expire_silence(self, silence_id: str) -> bool:
        """End a silence now; False when there is no such silence still running."""
        ...

    async def redeliver(self, *, transition_id: str, sink: str) -> int:
        """Put that dead letter back in the queue; how many rows were (0 or 1)."""
        ...


class DaemonActions:
    """``ConsoleActions`` of a running daemon: its silences (``ActiveSilences``, which checks
    a silence, records it and applies it at once) and its store's ``redeliver``."""

    def __init__(self, silences: ActiveSilences, store: StatusReader, clock: Clock) -> None:
        self._silences = silences
        self._store = store
        self._clock = clock

    def __repr__(self) -> str:
        return f"DaemonActions({self._silences!r})"

    async def add_silence(
        self,
        *,
        matchers: Mapping[str, Any],
        starts_ms: int,
        ends_ms: int,
        comment: str,
        author: str,
    ) -> str:
        return await self._silences.add_silence(
            matchers=matchers, starts_ms=starts_ms, ends_ms=ends_ms, comment=comment, author=author
        )

    async def expire_silence(self, silence_id: str) -> bool:
        return await self._silences.expire_silence(silence_id)

    async def redeliver(self, *, transition_id: str, sink: str) -> int:
        now_ms = self._clock.wall_ms()
        return await self._store.redeliver(sink=sink, transition_id=transition_id, now_ms=now_ms)


def local_path(value: str) -> str:
    """``value`` if it is a path on this site, else "/": a redirect never leaves the console."""
    ok = value.startswith("/") and not value.startswith(("//", "/\\"))
    return value if ok else "/"


def see_other(location: str) -> web.Response:
    """A 303 to ``location``: after a POST, the browser GETs the page that shows the result."""
    return web.Response(status=303, headers={"Location": location})


class ActionHandlers:
    """The POST handlers, sharing the guard with the pages."""

    def __init__(
        self, guard: Guard, actions: ConsoleActions | None, clock: Clock, fail: Fail
    ) -> None:
        self._guard = guard
        self._actions = actions
        self._clock = clock
        self._fail = fail

    def register(self, app: web.Application) -> None:
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_post("/silences", self._add_silence)
        app.router.add_post("/silences/{silence_id}/expire", self._expire_silence)
        app.router.add_post("/outbox/redeliver", self._redeliver)

    async def _form(self, request: web.Request) -> dict[str, str]:
        form = await request.post()
        return {name: value for name, value in form.items() if isinstance(value, str)}

    def _refusal(self, request: web.Request, form: Mapping[str, str]) -> tuple[int, str] | None:
        """Why this request may not act (status, reason), or None."""
        if self._actions is None:
            return 404, "this daemon offers no actions on the status page"
        if not self._guard.enabled:
            return 403, "the status page is read-only: set http.token_file to allow actions"
        if self._guard.bearer_matches(request.headers.get("Authorization", "")):
            return None
        if not same_origin(request.headers):
            return 403, "refused: the form was not sent from this status page"
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not self._guard.session_valid(cookie, self._clock.wall_ms()):
            return 401, "sign in with the daemon's token first"
        if not self._guard.csrf_valid(cookie, form.get("csrf", "")):
            return 403, "the form is out of date; reload the page and try again"
        return None

    async def _checked(self, request: web.Request) -> dict[str, str] | web.Response:
        form = await self._form(request)
        refusal = self._refusal(request, form)
        if refusal is not None:
            _log.warning("console_refused", path=request.path, peer=request.remote)
            return await self._fail(request, *refusal)
        return form

    async def _login(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if not self._guard.enabled:
            return await self._fail(request, 403, "no token is configured: the page is read-only")
        if not same_origin(request.headers):
            return await self._fail(request, 403, "refused: not sent from this status page")
        if not self._guard.token_matches(form.get("token", "")):
            _log.warning("console_unauthorized", peer=request.remote)
            await asyncio.sleep(0.5)  # a guess costs time; the right token never waits
            return await self._fail(request, 401, "that is not the daemon's token")
        response = see_other(local_path(form.get("next", "/")))
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        response.set_cookie(
            SESSION_COOKIE,
            self._guard.new_session(self._clock.wall_ms()),
            max_age=SESSION_MS // 1000,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=secure,
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        response = see_other("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def _add_silence(self, request: web.Request) -> web.Response:
        form = await self._checked(request)
        if isinstance(form, web.Response):
            return form
        assert self._actions is not None  # checked: no actions, no form
        try:
            wanted = silence_request(form, self._clock.wall_ms())
            await self._actions.add_silence(**wanted)
        except (FormError, SilenceError) as exc:
            return await self._fail(request, 400, str(exc))
        except StateStoreError as exc:
            return await self._fail(request, 503, str(exc))
        return see_other("/silences")

    async def _expire_silence(self, request: web.Request) -> web.Response:
        form = await self._checked(request)
        if isinstance(form, web.Response):
            return form
        assert self._actions is not None
        try:
            done = await self._actions.expire_silence(request.match_info["silence_id"])
        except StateStoreError as exc:
            return await self._fail(request, 503, str(exc))
        if not done:
            return await self._fail(request, 404, "no such silence is running")
        return see_other("/silences")

    async def _redeliver(self, request: web.Request) -> web.Response:
        form = await self._checked(request)
        if isinstance(form, web.Response):
            return form
        assert self._actions is not None
        try:
            transition_id = text_field(form, "transition_id", required=True)
            sink = text_field(form, "sink", required=True)
            await self._actions.redeliver(transition_id=transition_id, sink=sink)
        except FormError as exc:
            return await self._fail(request, 400, str(exc))
        except StateStoreError as exc:
            return await self._fail(request, 503, str(exc))
        return see_other(local_path(form.get("next", "/")))
