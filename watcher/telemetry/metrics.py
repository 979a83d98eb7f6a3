"""Prometheus metrics, on a registry of our own (no process-global state).

Counters and histograms are updated where things happen (scheduler, dispatcher); gauges that
describe the state (invocations by status, outbox depth) are computed at scrape time from the
scheduler and the store, so they can never drift. No label ever holds a secret or an id:
invocation ids would make the series unbounded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
        self._collectors: list[Collector] = []

    def watch_state(self, collector: Collector) -> None:
        """Register scrape-time gauges; the daemon's read the scheduler and the store."""
        if not any(type(c) is type(collector) for c in self._collectors):
            self._collectors.append(collector)
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
