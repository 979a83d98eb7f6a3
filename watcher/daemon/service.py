"""The ``Watcher`` service: lifecycle and signals around the parts ``build`` wires.

``startup()`` opens the state DB, the HTTP session and the optional endpoint, builds the rest
and takes the live ids; ``run_until_stopped()`` (or ``run_once()``) polls, delivers and prunes,
with sd_notify READY / STATUS / WATCHDOG; ``reload()`` applies a changed config without losing
state; ``shutdown()`` delivers what it can and closes everything. The stop fits systemd's
TimeoutStopSec=30: polls and deliveries get ``poll.stop_timeout_s`` (10 s) side by side, then
2 s to record, then a 5 s drain (sinks cut short skipped), then closing.
``serve()`` is all of it under the daemon's signal policy: SIGTERM or SIGINT stop, a second
SIGINT forces the exit, SIGHUP reloads. The handlers only set events.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
import structlog

from watcher.config.load import ConfigError, load_config, warn_if_secrets_exposed
from watcher.config.models import Config, LoadedConfig, Tracked
from watcher.core.clock import Clock, SystemClock
from watcher.daemon.api import TokenError, TrackApi, resolve_token, restart_needed
from watcher.daemon.build import Parts, build
from watcher.daemon.console import Console, DaemonActions
from watcher.daemon.demand import api_demand, info_values
from watcher.daemon.filewatch import InvocationsFileWatcher
from watcher.daemon.gauges import SilenceCollector, StateCollector, TrackingCollector
from watcher.daemon.http import EndpointError, HttpEndpoint, start_endpoint
from watcher.daemon.live import LiveTracking
from watcher.daemon.notify import Notifier
from watcher.daemon.polled import RECORD_POLLED_EVERY_S, record_info_every, record_polled_every
from watcher.daemon.reload import apply_config, reload_on_request
from watcher.daemon.replica import Replica, join_replica, replica_fencing
from watcher.daemon.reporting import readiness, status_counts, status_line
from watcher.daemon.signals import install_signal_handlers
from watcher.engine.poll import PollOutcome
from watcher.engine.scheduler import Scheduler
from watcher.store.errors import StateStoreError
from watcher.store.open import open_store
from watcher.store.protocols import StateStore
from watcher.store.retention import run_retention
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.service")


class StartupError(Exception):
    """The watcher cannot start; the message says why and what to change."""


class Watcher:
    """One running watcher: owns the store, the session, the parts and the tasks."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._loaded = loaded
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self._store: StateStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._parts: Parts | None = None
        self._http: HttpEndpoint | None = None
        self._live: LiveTracking | None = None
        self._api: TrackApi | None = None
        self._file_watcher: InvocationsFileWatcher | None = None
        self._replica: Replica | None = None
        self._reload_requested = asyncio.Event()

    @property
    def config(self) -> Config:
        return self._loaded.config

    @property
    def parts(self) -> Parts:
        assert self._parts is not None, "startup() first"
        return self._parts

    @property
    def scheduler(self) -> Scheduler:
        return self.parts.scheduler

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "startup() first"
        return self._store

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http is not None else None

    # -- startup -------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Open everything; raises ``StateStoreError`` early, before any poll and before READY:
        the store's open refuses a corrupt or read-only state DB (``store.sqlite.startup``)."""
        config = self.config
        warn_if_secrets_exposed(self._loaded)
        self._store = store = await open_store(config.state)
        # No pool-wide connection cap: the limiter bounds FC requests (and follows a reload),
        # each sink bounds its own; a cap fixed here would hold a raised concurrency back and
        # make webhooks queue behind polls.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector)
        self._parts = await build(
            config,
            self._loaded.tracked,
            store=self._store,
            session=self._session,
            clock=self._clock,
            rng=self._rng,
            metrics=self.metrics,
            fencing=(fencing := replica_fencing(store, config.state)),
        )
        self._replica = await join_replica(fencing, self._parts, config.state, self._clock)
        counts = lambda: status_counts(self._parts)  # noqa: E731
        self.metrics.watch_state(StateCollector(counts, lambda: self._store))
        self.metrics.watch_state(TrackingCollector(self.parts, lambda: self.readiness() is None))
        self.metrics.watch_state(SilenceCollector(self.parts.silences.active_count))
        self._file_watcher = InvocationsFileWatcher(self._loaded, self._apply_ids)
        self._live = LiveTracking(store, self.scheduler, poll=lambda: self.config.poll)
        await self._live.start()
        await self._start_http(self._live)
        _log.info(
            "watcher_started",
            config=str(self._loaded.path),
            state=str(config.state.path or "postgresql"),
            tracked=len(self._loaded.tracked),
            live=len(self._live.members()),
            active=self.scheduler.active_count,
            sinks=list(self.parts.sinks),
            http=config.http.listen,
        )

    async def _start_http(self, live: LiveTracking) -> None:
        http = self.config.http  # no http.listen: an API that no endpoint serves
        try:
            token = resolve_token(http)
            self._api = TrackApi(self.store, live, self._clock, token, self.parts.silences)
            actions = DaemonActions(self.parts.silences, self.store, self._clock)
            path = self.config.state.path  # the page reads SQLite; not yet PostgreSQL
            console = (
                Console(path, token=token, clock=self._clock, actions=actions) if path else None
            )
            self._http = await start_endpoint(
                http, metrics=self.metrics, readiness=self.readiness, api=self._api, console=console
            )
        except (EndpointError, TokenError) as exc:
            await self.shutdown(drain_timeout_s=0)
            raise StartupError(str(exc)) from None

    # -- what it reports -----------------------------------------------------------------------

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``reporting.status_line``)."""
        return status_line(self._parts, self._store)

    def readiness(self) -> str | None:
        """None when ready, else why not (``reporting.readiness``)."""
        return readiness(self._parts, self._store, self.config, self._clock)

    # -- running -------------------------------------------------------------------------------

    async def serve(self) -> None:
        """The daemon's whole life: start, run until SIGTERM or SIGINT, shut down."""
        stop = asyncio.Event()
        install_signal_handlers(stop, reload=self.request_reload)
        await self.startup()
        try:
            await self.run_until_stopped(stop)
        finally:
            await self.shutdown()

    def request_reload(self) -> None:
        """From the SIGHUP handler: reload at the next opportunity."""
        self._reload_requested.set()

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        """Poll, deliver, prune, and answer to systemd until ``stop`` is set."""
        parts = self.parts
        parts.scheduler.spread_first_polls()
        parts.dispatcher.wake()  # rows left by a previous run go out first
        self.notifier.ready(self.status_line())
        async with asyncio.TaskGroup() as group:
            group.create_task(parts.scheduler.run(stop), name="scheduler")
            delivery = parts.dispatcher.run(
                stop, stop_timeout_s=lambda: self.config.poll.stop_timeout_s
            )
            group.create_task(delivery, name="outbox")
            polled = record_polled_every(self.store, parts.scheduler, RECORD_POLLED_EVERY_S, stop)
            group.create_task(polled, name="last-polled")
            demand = lambda: info_values(api_demand(parts.scheduler, parts.discovery))  # noqa: E731
            info = record_info_every(self.store, demand, self._clock.wall_ms, 10.0, stop)
            group.create_task(info, name="daemon-info")
            group.create_task(self.notifier.watchdog(stop, self.status_line), name="watchdog")
            reloads = reload_on_request(self._reload_requested, stop, self.reload)
            group.create_task(reloads, name="reloads")
            if self._live is not None:
                group.create_task(self._live.run(stop), name="live")
            group.create_task(parts.silences.run(stop), name="silences")
            group.create_task(parts.discovery.run(stop), name="discovery")
            if self._replica is not None:
                group.create_task(self._replica.run(stop), name="replica")
            if self._file_watcher is not None:
                group.create_task(self._file_watcher.run(stop), name="invocations-files")
            retention = run_retention(
                self.store,
                retention_days=self.config.state.retention_days,
                protected_keys=lambda: parts.scheduler.snapshots().keys(),
                clock=self._clock,
                stop=stop,
            )
            group.create_task(retention, name="retention")
        self.notifier.stopping()

    async def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep running the old one."""
        self.notifier.reloading()
        try:
            loaded = load_config(self._loaded.path)
        except ConfigError as exc:
            _log.error(
                "reload_failed", config=str(exc.path), problems=exc.problems, kept="old config"
            )
            self.notifier.ready(self.status_line())
            return False
        await self._apply(loaded)
        self.notifier.ready(self.status_line())
        return True

    async def _apply(self, loaded: LoadedConfig) -> None:
        old, new = self.config, loaded.config
        for setting in restart_needed(old, new):
            _log.warning("reload_ignored", setting=setting, reason="needs a restart")
        warn_if_secrets_exposed(loaded)
        assert self._session is not None
        snapshots = await self.store.load_snapshots()
        apply_config(self.parts, loaded, session=self._session, snapshots=snapshots)
        self._loaded = loaded
        if self._live is not None:  # the live ids take the new stuck limits
            self._live.resettle(snapshots)
        if self._http is not None:
            self._http.reload_token(new.http)
        if self._file_watcher is not None:
            self._file_watcher.use_config(loaded)

    async def _apply_ids(self, tracked: tuple[Tracked, ...]) -> None:
        """An invocations_file changed: the config source tracks what the files list now."""
        snapshots = await self.store.load_snapshots()
        self.parts.config_source.replace(tracked, self.parts.scheduler, snapshots)

    async def run_once(self) -> list[PollOutcome]:
        """Deliver leftovers, poll every active invocation once, deliver what it found."""
        parts = self.parts
        await parts.dispatcher.drain()
        await parts.discovery.scan_all()  # what the discover entries find is polled too
        outcomes = await parts.scheduler.poll_all()
        await parts.dispatcher.drain()
        return outcomes

    # -- shutdown ------------------------------------------------------------------------------

    async def shutdown(self, *, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is due within the bound, then close sinks, session and store."""
        self.notifier.stopping()
        parts = self._parts
        if parts is not None:
            try:
                await asyncio.wait_for(parts.dispatcher.drain(), timeout=drain_timeout_s)
            except TimeoutError:
                _log.warning("shutdown_drain_timeout", timeout_s=drain_timeout_s)
        if self._http is not None:
            await self._http.stop()
        if parts is not None and self._store is not None:
            try:
                await self._store.record_polled(parts.scheduler.last_polled_ms())
            except StateStoreError as exc:  # a full disk must not keep the stop from closing
                _log.warning("last_polled_not_saved", error=str(exc))
        if self._replica is not None:  # its slots go to the others now, not a lease later
            await self._replica.leave()
        for sink in parts.sinks.values() if parts is not None else ():
            await sink.close()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            await self._store.close()
        self.notifier.close()
        _log.info("watcher_stopped")
