"""The composition root: the one place that wires the engine and delivery from a config.

``build`` turns a validated config into connected parts (client, limiter, poller, scheduler,
sources, sinks, dispatcher) around a store it is handed, with the clock, the random source and
the metrics injected. The daemon, the benchmark, the demo and the tests all build through it,
so what they run is what ships. It starts nothing and opens nothing but the sinks: the
service owns lifecycle and signals.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import structlog

from watcher.config.models import Config, Tracked
from watcher.core.clock import Clock
from watcher.core.route import route
from watcher.daemon.silences import ActiveSilences
from watcher.delivery.dispatcher import Dispatcher
from watcher.delivery.sinks import Sink
from watcher.delivery.sinks.registry import build_sinks, delivery_policies
from watcher.engine.discovery import Discovery, discover_specs
from watcher.engine.limiter import ApiLimiter
from watcher.engine.ownership import Fencing
from watcher.engine.poll import Poller, Router
from watcher.engine.scheduler import Scheduler
from watcher.engine.sources import ConfigSource
from watcher.fc.client import FcClient
from watcher.fc.credentials import (
    Credentials,
    CredentialSource,
    DefaultChainCredentialSource,
    StaticCredentialSource,
)
from watcher.fc.endpoint import resolve_endpoint
from watcher.store.protocols import StateStore
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.build")


def credential_source(config: Config) -> CredentialSource:
    """Explicit keys from the config, or else Alibaba Cloud's default chain."""
    fc = config.fc
    key_id = fc.access_key_id.get_secret_value() if fc.access_key_id else ""
    secret = fc.access_key_secret.get_secret_value() if fc.access_key_secret else ""
    token = fc.security_token.get_secret_value() if fc.security_token else ""
    if key_id and secret:  # empty values (e.g. ${VAR:-}) mean "not given"
        return StaticCredentialSource(Credentials(key_id, secret, token or None, "config"))
    return DefaultChainCredentialSource()


def make_client(
    config: Config,
    session: aiohttp.ClientSession,
    credentials: CredentialSource | None = None,
) -> FcClient:
    """The FC client for ``config``'s endpoint, signing with ``credentials`` (default: the
    config's keys or the default chain)."""
    fc = config.fc
    endpoint = resolve_endpoint(fc.account_id, fc.region, internal=fc.internal, url=fc.endpoint)
    if endpoint.is_insecure_remote:
        _log.warning(
            "endpoint_plain_http",
            endpoint=endpoint.base_url,
            hint="requests and their signatures travel unencrypted; use https",
        )
    return FcClient(
        session,
        endpoint=endpoint,
        account_id=fc.account_id,
        credentials=credentials or credential_source(config),
        scheme=fc.signature,
        timeout_s=fc.timeout_s,
        max_body_bytes=fc.max_body_bytes,
    )


def log_sinks(config: Config) -> list[str]:
    """The ``log`` sinks: they get every transition the routes send them, silenced or not."""
    return [sink.name for sink in config.sinks if sink.type == "log"]


def make_router(config: Config) -> Router:
    """Routes of ``config`` as the function the poller calls on committed transitions.
    Silences apply after it (``Parts.silences``), so a reload that replaces it keeps them."""
    alert_sinks = [sink.name for sink in config.sinks if sink.type != "log"]
    return functools.partial(
        route, routes=config.routes, log_sinks=log_sinks(config), alert_sinks=alert_sinks
    )


@dataclass(slots=True)
class Parts:
    """Everything ``build`` wired, for the service (and tests) to run and reconfigure."""

    config: Config
    store: StateStore
    client: FcClient
    limiter: ApiLimiter
    poller: Poller
    scheduler: Scheduler
    config_source: ConfigSource
    discovery: Discovery
    sinks: dict[str, Sink]
    dispatcher: Dispatcher
    silences: ActiveSilences


async def build(
    config: Config,
    tracked: Sequence[Tracked],
    *,
    store: StateStore,
    session: aiohttp.ClientSession,
    clock: Clock,
    rng: random.Random,
    metrics: Metrics | None,
    credentials: CredentialSource | None = None,
    on_lag: Callable[[float], None] | None = None,
    fencing: Fencing | None = None,
) -> Parts:
    """Wire a watcher for ``config`` that tracks ``tracked`` (first polls not yet spread);
    ``fencing``: as one replica of several (PostgreSQL), polling and scanning its slots only."""
    sinks = build_sinks(config.sinks, session, config.fc.region)
    policies = delivery_policies(config.sinks)
    dispatcher = Dispatcher(store, sinks, policies, clock=clock, rng=rng, metrics=metrics)
    client = make_client(config, session, credentials)
    limiter = ApiLimiter(config.poll.concurrency, config.poll.api_budget_per_s, clock)
    # The log sinks of the config in force: ``parts.config`` follows a reload.
    silences = ActiveSilences(store, clock, log_sinks=lambda: log_sinks(parts.config))
    await silences.start()
    poller = Poller(client=client, store=store, router=make_router(config), settings=config.poll,
                    clock=clock, limiter=limiter, metrics=metrics, on_commit=dispatcher.wake,
                    silencer=silences.hold_back, fencing=fencing)  # fmt: skip
    ownership = fencing.ownership if fencing is not None else None
    scheduler = Scheduler(poller, settings=config.poll, clock=clock, rng=rng, metrics=metrics,
                          on_lag=on_lag, ownership=ownership)  # fmt: skip
    config_source = ConfigSource(tracked)
    snapshots = await store.load_snapshots()
    config_source.attach(scheduler, snapshots)
    discovery = Discovery(
        lister=client,
        limiter=limiter,
        scheduler=scheduler,
        store=store,
        clock=clock,
        settings=config.poll,
        rng=rng,
        metrics=metrics,
        watermarks=await store.load_watermarks(),
        fencing=fencing,
    )
    discovery.configure(discover_specs(config), snapshots, config.poll)
    parts = Parts(*(config, store, client, limiter, poller, scheduler), config_source,
                  discovery, sinks, dispatcher, silences)  # fmt: skip
    return parts
