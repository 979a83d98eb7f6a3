"""The optional HTTP endpoint: /healthz, /readyz and /metrics (Prometheus text), and the
API (``/api/v1/track``, ``/api/v1/silences``: ``watcher.daemon.api``) when the service hands
one over.

Off unless ``http.listen`` is set. /healthz answers from the event loop, so an answer means the
loop is alive; /readyz also needs the state DB open, its writes succeeding (a full disk or a
read-only file answers 503 with the reason until a write succeeds again) and a poll finished
recently. Neither touches the database: both read what the daemon keeps in memory.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from watcher.config.models import HttpSettings
from watcher.daemon.api import TrackApi
from watcher.daemon.console import Console, add_console_routes
from watcher.telemetry.metrics import Metrics


class EndpointError(Exception):
    """The endpoint cannot listen; the message names the address and the fix."""


async def start_endpoint(
    http: HttpSettings,
    *,
    metrics: Metrics,
    readiness: Callable[[], str | None],
    api: TrackApi | None,
    console: Console | None = None,
) -> HttpEndpoint | None:
    """The endpoint ``http.listen`` asks for, listening (None when it asks for none)."""
    address = http.address()
    if address is None:
        return None
    endpoint = HttpEndpoint(
        *address,
        metrics=metrics,
        readiness=readiness,
        api=api,
        console=console,
        max_body_bytes=http.max_body_bytes,
    )
    try:
        await endpoint.start()
    except OSError as exc:
        await endpoint.stop()
        raise EndpointError(
            f"cannot listen on {http.listen} ({exc.strerror or exc}); "
            "change http.listen or stop what uses that port"
        ) from None
    return endpoint


class HttpEndpoint:
    """Serves health and metrics on one address."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics,
        readiness: Callable[[], str | None],
        api: TrackApi | None = None,
        console: Console | None = None,
        max_body_bytes: int = 1024 * 1024,
    ):
        self._host = host
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self._api = api
        self._console = console
        self._max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        # aiohttp refuses a larger body with 413 when a handler reads it.
        app = web.Application(client_max_size=self._max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        if self._api is not None:
            self._api.max_body_bytes = self._max_body_bytes
            self._api.register(app)
        if self._console is not None:
            add_console_routes(app, self._console)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.port = int(self._runner.addresses[0][1])

    def reload_token(self, http: HttpSettings) -> None:
        """A reload: the API and the status page take the new token (an unreadable file
        keeps the old one, and says so)."""
        if self._api is not None:
            self._api.reload_token(http)
            if self._console is not None:
                self._console.set_token(self._api.token)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        problem = self._readiness()
        if problem is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {problem}\n")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
