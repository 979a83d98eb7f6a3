"""The ``Watcher`` service: three named phases around the scheduler and the outbox.

``startup()`` opens the state DB, the HTTP session, the client and the sinks;
``run_until_stopped()`` (or ``run_once()``) polls and delivers; ``shutdown()`` delivers what it
can within the stop bound and closes everything. Signal handlers only set an event.
"""

from __future__ import annotations

import asyncio
import functools
import random

import aiohttp
import structlog

from watcher.config import Config, LoadedConfig
from watcher.fc.client import FcClient, resolve_endpoint
from watcher.fc.credentials import (
    Credentials,
    CredentialSource,
    DefaultChainCredentialSource,
    StaticCredentialSource,
)
from watcher.outbox import Dispatcher
from watcher.router import route
from watcher.scheduler import Clock, PollOutcome, Scheduler, SystemClock
from watcher.sinks import Sink
from watcher.sinks.registry import build_sinks, delivery_policies
from watcher.store import StateStore

_log = structlog.get_logger("watcher.service")


def credential_source(config: Config) -> CredentialSource:
    """Explicit keys from the config, or else Alibaba Cloud's default chain."""
    fc = config.fc
    key_id = fc.access_key_id.get_secret_value() if fc.access_key_id else ""
    secret = fc.access_key_secret.get_secret_value() if fc.access_key_secret else ""
    token = fc.security_token.get_secret_value() if fc.security_token else ""
    if key_id and secret:  # empty values (e.g. ${VAR:-}) mean "not given"
        return StaticCredentialSource(Credentials(key_id, secret, token or None, "config"))
    return DefaultChainCredentialSource()


class Watcher:
    """One running watcher: owns the store, the session, the sinks and the tasks."""

    def __init__(
        self, loaded: LoadedConfig, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self._loaded = loaded
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._store: StateStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sinks: dict[str, Sink] = {}
        self._dispatcher: Dispatcher | None = None
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        assert self._scheduler is not None, "startup() first"
        return self._scheduler

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "startup() first"
        return self._store

    async def startup(self) -> None:
        """Open everything; raises ``StateStoreError`` or ``ConfigError``-like errors early."""
        config = self._loaded.config
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
        self._store = StateStore.open(config.state.path)
        snapshots = self._store.load_snapshots()
        connector = aiohttp.TCPConnector(limit=config.poll.concurrency, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector)
        client = FcClient(
            self._session,
            endpoint=endpoint,
            account_id=config.fc.account_id,
            credentials=credential_source(config),
            scheme=config.fc.signature,
            timeout_s=config.fc.timeout_s,
            max_body_bytes=config.fc.max_body_bytes,
        )
        self._sinks = build_sinks(config.sinks, self._session, config.fc.region)
        self._dispatcher = Dispatcher(
            self._store, self._sinks, delivery_policies(config.sinks), rng=self._rng
        )
        log_sinks = [sink.name for sink in config.sinks if sink.type == "log"]
        self._scheduler = Scheduler(
            self._loaded.tracked,
            snapshots,
            client=client,
            store=self._store,
            router=functools.partial(route, routes=config.routes, log_sinks=log_sinks),
            settings=config.poll,
            on_commit=self._dispatcher.wake,
            clock=self._clock,
            rng=self._rng,
        )
        _log.info(
            "watcher_started",
            config=str(self._loaded.path),
            state=str(config.state.path),
            tracked=len(self._loaded.tracked),
            active=self._scheduler.active_count,
            sinks=list(self._sinks),
        )

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        """Poll and deliver until ``stop`` is set."""
        assert self._dispatcher is not None
        self.scheduler.spread_first_polls()
        self._dispatcher.wake()  # rows left by a previous run go out first
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler.run(stop), name="scheduler")
            group.create_task(self._dispatcher.run(stop), name="outbox")

    async def run_once(self) -> list[PollOutcome]:
        """Deliver leftovers, poll every active invocation once, deliver what it found."""
        assert self._dispatcher is not None
        await self._dispatcher.drain()
        outcomes = await self.scheduler.poll_all()
        await self._dispatcher.drain()
        return outcomes

    async def shutdown(self, *, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is due within the bound, then close sinks, session and store."""
        if self._dispatcher is not None:
            try:
                await asyncio.wait_for(self._dispatcher.drain(), timeout=drain_timeout_s)
            except TimeoutError:
                _log.warning("shutdown_drain_timeout", timeout_s=drain_timeout_s)
        if self._scheduler is not None and self._store is not None:
            self._store.record_polled(self._scheduler.last_polled_ms())
        for sink in self._sinks.values():
            await sink.close()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            self._store.close()
        _log.info("watcher_stopped")
