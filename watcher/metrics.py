"""Prometheus metrics, on a registry of our own (no process-global state).

Counters and histograms are updated where things happen (scheduler, dispatcher); gauges that
describe the state (invocations by status, outbox depth) are computed at scrape time from the
scheduler and the store, so they can never drift. No label ever holds a secret or an id:
invocation ids would make the series unbounded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from watcher.store import StateStore

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StateCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(
        self, statuses: Callable[[], Counter[str]], store: Callable[[], StateStore | None]
    ) -> None:
        self._statuses = statuses
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tracked = GaugeMetricFamily(
            "fc_watcher_invocations", "Tracked invocations by last known status", labels=["status"]
        )
        for status, count in sorted(self._statuses().items()):
            tracked.add_metric([status], count)
        yield tracked
        store = self._store()
        if store is None:
            return
        depth = GaugeMetricFamily("fc_watcher_outbox_depth", "Pending deliveries", labels=["sink"])
        oldest = GaugeMetricFamily(
            "fc_watcher_outbox_oldest_age_seconds",
            "Age of the oldest pending delivery",
            labels=["sink"],
        )
        dead = GaugeMetricFamily(
            "fc_watcher_dead_letters", "Dead-lettered deliveries", labels=["sink"]
        )
        now_ms = int(time.time() * 1000)
        for row in store.outbox_by_sink():
            depth.add_metric([row.sink], row.pending)
            oldest.add_metric(
                [row.sink], max(0, now_ms - row.oldest_created_ms) / 1000 if row.pending else 0
            )
            dead.add_metric([row.sink], row.dead)
        yield depth
        yield oldest
        yield dead


class Metrics:
    """Every metric the watcher exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.polls = PromCounter(
            "fc_watcher_polls", "Polls by result", ["result"], registry=self.registry
        )
        self.api_latency = Histogram(
            "fc_watcher_api_latency_seconds",
            "Latency of FC API calls",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.transitions = PromCounter(
            "fc_watcher_transitions",
            "Transitions recorded, by type",
            ["type"],
            registry=self.registry,
        )
        self.deliveries = PromCounter(
            "fc_watcher_deliveries",
            "Delivery attempts by sink and result (sent, retry, dead)",
            ["sink", "result"],
            registry=self.registry,
        )
        self.scheduling_lag = Histogram(
            "fc_watcher_scheduling_lag_seconds",
            "How late polls start after their due time",
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        )
        self._collector: _StateCollector | None = None

    def watch_state(
        self, statuses: Callable[[], Counter[str]], store: Callable[[], StateStore | None]
    ) -> None:
        """Register the scrape-time gauges (once)."""
        if self._collector is None:
            self._collector = _StateCollector(statuses, store)
            self.registry.register(self._collector)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
