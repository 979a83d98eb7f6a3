"""The ``Watcher`` service: three named phases around the scheduler and the outbox.

``startup()`` opens the state DB, the HTTP session, the client, the sinks and the optional
health/metrics endpoint; ``run_until_stopped()`` (or ``run_once()``) polls and delivers, with
sd_notify READY / STATUS / WATCHDOG; ``reload()`` applies a changed config without losing state;
``shutdown()`` delivers what it can within the stop bound and closes everything.
Signal handlers (in ``cli``) only set events or call ``request_reload``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import stat
from collections import Counter

import aiohttp
import structlog

from watcher.config.load import ConfigError, load_config
from watcher.config.models import Config, LoadedConfig
from watcher.core.clock import Clock, SystemClock
from watcher.core.route import route
from watcher.daemon.gauges import StateCollector
from watcher.daemon.http import HttpEndpoint
from watcher.daemon.notify import Notifier
from watcher.delivery.dispatcher import Dispatcher
from watcher.delivery.sinks import Sink
from watcher.delivery.sinks.file import FileSink
from watcher.delivery.sinks.registry import build_sink, delivery_policies
from watcher.engine.poll import PollOutcome, Router
from watcher.engine.scheduler import Scheduler
from watcher.fc.client import FcClient
from watcher.fc.credentials import (
    Credentials,
    CredentialSource,
    DefaultChainCredentialSource,
    StaticCredentialSource,
)
from watcher.fc.endpoint import resolve_endpoint
from watcher.store.protocols import StateStore
from watcher.store.retention import run_retention
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.service")


class StartupError(Exception):
    """The watcher cannot start; the message says why and what to change."""


def credential_source(config: Config) -> CredentialSource:
    """Explicit keys from the config, or else Alibaba Cloud's default chain."""
    fc = config.fc
    key_id = fc.access_key_id.get_secret_value() if fc.access_key_id else ""
    secret = fc.access_key_secret.get_secret_value() if fc.access_key_secret else ""
    token = fc.security_token.get_secret_value() if fc.security_token else ""
    if key_id and secret:  # empty values (e.g. ${VAR:-}) mean "not given"
        return StaticCredentialSource(Credentials(key_id, secret, token or None, "config"))
    return DefaultChainCredentialSource()


def warn_if_secrets_exposed(loaded: LoadedConfig) -> None:
    """A config holding inline secrets must not be readable by other users."""
    if not loaded.inline_secrets:
        return
    try:
        mode = loaded.path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        _log.warning(
            "config_readable_by_others",
            config=str(loaded.path),
            secrets=list(loaded.inline_secrets),
            fix=f"chmod 600 {loaded.path}, or move the secrets to ${{VAR}} or *_file "
            "(systemd LoadCredential=)",
        )


def _router(config: Config) -> Router:
    log_sinks = [sink.name for sink in config.sinks if sink.type == "log"]
    return functools.partial(route, routes=config.routes, log_sinks=log_sinks)


class Watcher:
    """One running watcher: owns the store, the session, the sinks and the tasks."""

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
        self._sinks: dict[str, Sink] = {}
        self._dispatcher: Dispatcher | None = None
        self._scheduler: Scheduler | None = None
        self._http: HttpEndpoint | None = None
        self._reload_requested = asyncio.Event()

    @property
    def config(self) -> Config:
        return self._loaded.config

    @property
    def scheduler(self) -> Scheduler:
        assert self._scheduler is not None, "startup() first"
        return self._scheduler

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "startup() first"
        return self._store

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http is not None else None

    # -- startup ---------------------------------------------------------------------------

    def _client(self, config: Config) -> FcClient:
        assert self._session is not None
        endpoint = resolve_endpoint(
            config.fc.account_id,
            config.fc.region,
            internal=config.fc.internal,
            url=config.fc.endpoint,
        )
        if endpoint.is_insecure_remote:
            _log.warning(
                "endpoint_plain_http",
                endpoint=endpoint.base_url,
                hint="requests and their signatures travel unencrypted; use https",
            )
        return FcClient(
            self._session,
            endpoint=endpoint,
            account_id=config.fc.account_id,
            credentials=credential_source(config),
            scheme=config.fc.signature,
            timeout_s=config.fc.timeout_s,
            max_body_bytes=config.fc.max_body_bytes,
        )

    async def startup(self) -> None:
        """Open everything; raises ``StateStoreError`` early, before any poll."""
        config = self.config
        warn_if_secrets_exposed(self._loaded)
        self._store = await SqliteStore.open(config.state.path)
        snapshots = await self._store.load_snapshots()
        # No pool-wide connection cap: the scheduler bounds FC requests (and follows a reload),
        # each sink bounds its own; a cap fixed here would hold a raised concurrency back and
        # make webhooks queue behind polls.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector)
        self._sinks = {s.name: build_sink(s, self._session, config.fc.region) for s in config.sinks}
        self._dispatcher = Dispatcher(
            self._store,
            self._sinks,
            delivery_policies(config.sinks),
            rng=self._rng,
            metrics=self.metrics,
        )
        self._scheduler = Scheduler(
            self._loaded.tracked,
            snapshots,
            client=self._client(config),
            store=self._store,
            router=_router(config),
            settings=config.poll,
            on_commit=self._dispatcher.wake,
            clock=self._clock,
            rng=self._rng,
            metrics=self.metrics,
        )
        self.metrics.watch_state(StateCollector(self._status_counts, lambda: self._store))
        address = config.http.address()
        if address is not None:
            self._http = HttpEndpoint(*address, metrics=self.metrics, readiness=self.readiness)
            try:
                await self._http.start()
            except OSError as exc:
                self._http = None
                await self.shutdown(drain_timeout_s=0)
                raise StartupError(
                    f"cannot listen on {config.http.listen} ({exc.strerror or exc}); "
                    "change http.listen or stop what uses that port"
                ) from None
        _log.info(
            "watcher_started",
            config=str(self._loaded.path),
            state=str(config.state.path),
            tracked=len(self._loaded.tracked),
            active=self._scheduler.active_count,
            sinks=list(self._sinks),
            http=config.http.listen,
        )

    # -- what it reports ---------------------------------------------------------------------

    def _status_counts(self) -> Counter[str]:
        if self._scheduler is None:
            return Counter()
        return Counter(
            (snapshot.status if snapshot and snapshot.status else "unknown")
            for snapshot in self._scheduler.snapshots().values()
        )

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        counts = self._status_counts()
        # From the store's cache: a STATUS line every watchdog period must not scan the DB.
        backlog = self._store.cached_backlog() if self._store else ()
        pending = sum(row.pending for row in backlog)
        return (
            f"tracking {sum(counts.values())} invocations, {counts.get('Failed', 0)} failed, "
            f"outbox {pending}"
        )

    def readiness(self) -> str | None:
        """None when ready, else why not (for /readyz)."""
        if self._store is None or self._scheduler is None:
            return "starting"
        if self._scheduler.active_count == 0:
            return None
        last = self._scheduler.last_poll_finished_s
        limit_s = 2 * self.config.poll.max_interval_s + self.config.fc.timeout_s
        if last is None or self._clock.monotonic() - last > limit_s:
            return f"no poll finished in the last {limit_s:g} s"
        return None

    # -- running ---------------------------------------------------------------------------

    def request_reload(self) -> None:
        """From the SIGHUP handler: reload at the next opportunity."""
        self._reload_requested.set()

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        """Poll, deliver, and answer to systemd until ``stop`` is set."""
        assert self._dispatcher is not None
        self.scheduler.spread_first_polls()
        self._dispatcher.wake()  # rows left by a previous run go out first
        self.notifier.ready(self.status_line())
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler.run(stop), name="scheduler")
            group.create_task(self._dispatcher.run(stop), name="outbox")
            group.create_task(self.notifier.watchdog(stop, self.status_line), name="watchdog")
            group.create_task(self._reloads(stop), name="reloads")
            group.create_task(
                run_retention(
                    self.store,
                    retention_days=self.config.state.retention_days,
                    protected_keys=lambda: self.scheduler.snapshots().keys(),
                    clock=self._clock,
                    stop=stop,
                ),
                name="retention",
            )
        self.notifier.stopping()

    async def _reloads(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._reload_requested.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._reload_requested.is_set() and not stop.is_set():
                self._reload_requested.clear()
                await self.reload()

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
        assert self._dispatcher is not None
        assert self._session is not None
        if new.state != old.state:
            _log.warning("reload_ignored", setting="state", reason="needs a restart")
        if new.http != old.http:
            _log.warning("reload_ignored", setting="http", reason="needs a restart")
        warn_if_secrets_exposed(loaded)
        old_sinks = {s.name: s for s in old.sinks}
        sinks: dict[str, Sink] = {}
        for entry in new.sinks:
            keep = old_sinks.get(entry.name) == entry and entry.name in self._sinks
            sinks[entry.name] = (
                self._sinks[entry.name] if keep else build_sink(entry, self._session, new.fc.region)
            )
        retired = [sink for name, sink in self._sinks.items() if sinks.get(name) is not sink]
        for sink in sinks.values():
            if isinstance(sink, FileSink):
                sink.reopen()  # SIGHUP also means "logrotate moved the file"
        self._dispatcher.replace_sinks(sinks, delivery_policies(new.sinks))
        self._sinks = sinks
        for sink in retired:
            asyncio.get_running_loop().create_task(sink.close())
        scheduler = self.scheduler
        if new.fc != old.fc:
            scheduler.set_client(self._client(new))
        scheduler.set_router(_router(new))
        scheduler.set_settings(new.poll)
        scheduler.replace_tracked(loaded.tracked, await self.store.load_snapshots())
        self._loaded = loaded
        _log.info(
            "config_reloaded",
            tracked=len(loaded.tracked),
            active=scheduler.active_count,
            sinks=list(sinks),
            routes=len(new.routes),
        )

    async def run_once(self) -> list[PollOutcome]:
        """Deliver leftovers, poll every active invocation once, deliver what it found."""
        assert self._dispatcher is not None
        await self._dispatcher.drain()
        outcomes = await self.scheduler.poll_all()
        await self._dispatcher.drain()
        return outcomes

    # -- shutdown --------------------------------------------------------------------------

    async def shutdown(self, *, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is due within the bound, then close sinks, session and store."""
        self.notifier.stopping()
        if self._dispatcher is not None:
            try:
                await asyncio.wait_for(self._dispatcher.drain(), timeout=drain_timeout_s)
            except TimeoutError:
                _log.warning("shutdown_drain_timeout", timeout_s=drain_timeout_s)
        if self._http is not None:
            await self._http.stop()
        if self._scheduler is not None and self._store is not None:
            await self._store.record_polled(self._scheduler.last_polled_ms())
        for sink in self._sinks.values():
            await sink.close()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            await self._store.close()
        self.notifier.close()
        _log.info("watcher_stopped")
