"""The API on the health endpoint: ``POST`` and ``DELETE /api/v1/track``; ``GET`` and ``POST
/api/v1/silences`` and ``DELETE /api/v1/silences/{id}``.

Off (404) unless a bearer token is configured (``http.token_file`` or ``http.token``). Every
request, the silences' GET included (one token for the whole API, and nothing to read without
it), must carry ``Authorization: Bearer <token>`` (compared in constant time) before its body
is even read; the body is at most ``http.max_body_bytes`` (413 beyond). A registration or a
silence is written to the state DB first (durable, like ``fc-watcher track`` and ``silence``),
then applied at once, so the next poll cycle or commit obeys it. The token is never logged,
echoed or shown in a repr: errors name the field or the id, never what the client sent as
credentials.
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
from watcher.core.silence import SilenceError, describe
from watcher.daemon.live import LiveTracking, TrackRequest, TrackRequestError, track_request
from watcher.daemon.silences import ActiveSilences, silence_json, silence_request
from watcher.store.errors import StateStoreError
from watcher.store.protocols import TrackingStore

_log = structlog.get_logger("watcher.api")

TRACK_PATH = "/api/v1/track"
SILENCES_PATH = "/api/v1/silences"


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
    """The handlers of ``/api/v1/track`` and, given the daemon's silences, of
    ``/api/v1/silences``, registered on the endpoint's application."""

    def __init__(
        self,
        store: TrackingStore,
        live: LiveTracking,
        clock: Clock,
        token: str | None,
        silences: ActiveSilences | None = None,
    ) -> None:
        self._store = store
        self._live = live
        self._clock = clock
        self._token = token.encode() if token else None
        self._silences = silences
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

    @property
    def token(self) -> str | None:
        """The token in force (for the status page, which checks the same one)."""
        return self._token.decode() if self._token else None

    def register(self, app: web.Application) -> None:
        app.router.add_post(TRACK_PATH, self._track)
        app.router.add_delete(TRACK_PATH, self._untrack)
        if self._silences is not None:
            app.router.add_get(SILENCES_PATH, self._list_silences)
            app.router.add_post(SILENCES_PATH, self._add_silence)
            app.router.add_delete(SILENCES_PATH + "/{silence_id}", self._expire_silence)

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
        body = await self._body(request, "track")
        if isinstance(body, web.Response):
            return body
        try:
            return _parse(body)
        except TrackRequestError as exc:
            return _error(400, str(exc))

    def _refusal(self, request: web.Request, api: str) -> web.Response | None:
        """404 while the API is off, 401 without the right bearer token, else None."""
        if self._token is None:
            return _error(404, f"the {api} API is off; set http.token_file to turn it on")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self._token):
            _log.warning("api_unauthorized", path=request.path, peer=request.remote)
            response = _error(401, "missing or wrong bearer token (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="fc-watcher"'
            return response
        return None

    async def _body(self, request: web.Request, api: str) -> bytes | web.Response:
        """The body of an authorized request, or the answer that refuses it (404, 401, 413)."""
        refused = self._refusal(request, api)
        if refused is not None:
            return refused
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is over http.max_body_bytes ({self.max_body_bytes})")

    async def _list_silences(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, "silences")
        if refused is not None:
            return refused
        assert self._silences is not None  # registered only with silences
        try:
            listed = await self._silences.listed()
        except StateStoreError as exc:
            return _error(503, str(exc))
        now_ms = self._clock.wall_ms()
        return web.json_response({"silences": [silence_json(s, now_ms) for s in listed]})

    async def _add_silence(self, request: web.Request) -> web.Response:
        body = await self._body(request, "silences")
        if isinstance(body, web.Response):
            return body
        assert self._silences is not None  # registered only with silences
        try:
            spec = silence_request(_document(body, SilenceError), self._clock.wall_ms())
            silence = await self._silences.add(spec)
        except SilenceError as exc:
            return _error(400, str(exc))
        except StateStoreError as exc:
            return _error(503, str(exc))
        _log.info("silence_added", silence_id=silence.id, matchers=describe(silence.match),
                  author=silence.author, via="api")  # fmt: skip
        document = silence_json(silence, self._clock.wall_ms())
        return web.json_response({"silence": document}, status=201)

    async def _expire_silence(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, "silences")
        if refused is not None:
            return refused
        assert self._silences is not None  # registered only with silences
        silence_id = request.match_info["silence_id"]
        try:
            expiry = await self._silences.expire(silence_id)
        except StateStoreError as exc:
            return _error(503, str(exc))
        if expiry.silence is None:
            shown = silence_id if len(silence_id) <= 40 else silence_id[:37] + "..."
            return _error(404, f"no silence has id {shown!r}; GET {SILENCES_PATH} lists them")
        if expiry.expired:
            _log.info("silence_expired", silence_id=silence_id, via="api")
        document = silence_json(expiry.silence, self._clock.wall_ms())
        return web.json_response({"silence": document, "expired": expiry.expired})


def _document(body: bytes, error: type[ValueError]) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise error("the body is not JSON; send a JSON object") from None


def _parse(body: bytes) -> TrackRequest:
    document = _document(body, TrackRequestError)
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
