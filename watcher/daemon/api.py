"""The write API on the health endpoint: ``POST`` and ``DELETE /api/v1/track``.

Off (404) unless a bearer token is configured (``http.token_file`` or ``http.token``). A
request must carry ``Authorization: Bearer <token>`` (compared in constant time) before its
body is even read; the body is at most ``http.max_body_bytes`` (413 beyond). A registration is
written to the state DB first (durable, like ``fc-watcher track``), then applied to the
scheduler at once, so the next poll cycle includes it. The token is never logged, echoed or
shown in a repr: errors name the field or the id, never what the client sent as credentials.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from watcher.config.models import Config, HttpSettings
from watcher.core.clock import Clock
from watcher.daemon.live import LiveTracking, TrackRequest, TrackRequestError, track_request
from watcher.store.errors import StateStoreError
from watcher.store.protocols import TrackingStore

_log = structlog.get_logger("watcher.api")

TRACK_PATH = "/api/v1/track"


class TokenError(Exception):
    """The token file cannot be read or is empty; the message names the file and the fix."""


def resolve_token(http: HttpSettings) -> str | None:
    """The bearer token the settings give (the file's content, stripped), or None: API off.

    The config loader usually has read ``token_file`` into ``token`` already; a file given
    to the model directly is read here. An empty value (``${VAR:-}``) means "not given"."""
    if http.token_file is not None:
        path = Path(http.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise TokenError(
                f"cannot read http.token_file {path} ({reason}); fix the file or its "
                "permissions, or remove http.token_file"
            ) from None
        if not token:
            raise TokenError(f"http.token_file {path} is empty; put the bearer token in it")
        return token
    token = http.token.get_secret_value().strip() if http.token is not None else ""
    return token or None


def restart_needed(old: Config, new: Config) -> list[str]:
    """The sections a reload cannot apply. The API token can change (a rotated token file
    must not need a restart); where the endpoint listens cannot."""
    unchanged = {"token": None, "token_file": None}
    http_changed = new.http.model_copy(update=unchanged) != old.http.model_copy(update=unchanged)
    return [
        name
        for name, changed in (("state", new.state != old.state), ("http", http_changed))
        if changed
    ]


class TrackApi:
    """The handlers of ``/api/v1/track``, registered on the endpoint's application."""

    def __init__(
        self, store: TrackingStore, live: LiveTracking, clock: Clock, token: str | None
    ) -> None:
        self._store = store
        self._live = live
        self._clock = clock
        self._token = token.encode() if token else None
        self.max_body_bytes = 0
        """Set by the endpoint: named in the 413 answer."""

    def __repr__(self) -> str:
        return f"TrackApi(enabled={self._token is not None})"

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def reload_token(self, http: HttpSettings) -> None:
        """A reload: the new token applies to the next request; an unreadable file keeps the
        old one (and says so)."""
        try:
            token = resolve_token(http)
        except TokenError as exc:
            _log.error("reload_token_failed", error=str(exc), kept="old token")
            return
        self._token = token.encode() if token else None

    def register(self, app: web.Application) -> None:
        app.router.add_post(TRACK_PATH, self._track)
        app.router.add_delete(TRACK_PATH, self._untrack)

    async def _track(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        try:
            tracked = await self._store.track_live(checked.items(), self._clock.wall_ms())
        except StateStoreError as exc:
            return _error(503, str(exc))
        await self._live.refresh()  # now, not at the next tick: the next poll cycle has it
        already = len(checked.refs) - tracked
        return web.json_response(
            {"tracked": tracked, "alreadyTracked": already}, status=201 if tracked else 200
        )

    async def _untrack(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        try:
            untracked = await self._store.untrack_live(checked.refs, self._clock.wall_ms())
        except StateStoreError as exc:
            return _error(503, str(exc))
        await self._live.refresh()
        return web.json_response(
            {"untracked": untracked, "notTracked": len(checked.refs) - untracked}
        )

    async def _checked(self, request: web.Request) -> TrackRequest | web.Response:
        """The request, validated, or the answer that refuses it (404, 401, 413, 400)."""
        if self._token is None:
            return _error(404, "the track API is off; set http.token_file to turn it on")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self._token):
            _log.warning("api_unauthorized", path=request.path, peer=request.remote)
            response = _error(401, "missing or wrong bearer token (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="fc-watcher"'
            return response
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is over http.max_body_bytes ({self.max_body_bytes})")
        try:
            return _parse(body)
        except TrackRequestError as exc:
            return _error(400, str(exc))


def _parse(body: bytes) -> TrackRequest:
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise TrackRequestError("the body is not JSON; send a JSON object") from None
    if not isinstance(document, dict):
        raise TrackRequestError('the body must be a JSON object with "invocationIds"')
    return track_request(
        api=document.get("api", "fc2"),
        service=document.get("service"),
        function=document.get("function"),
        qualifier=document.get("qualifier"),
        ids=document.get("invocationIds"),
        labels=document.get("labels") if document.get("labels") is not None else {},
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
