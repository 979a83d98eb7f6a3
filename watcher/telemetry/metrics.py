"""Prometheus metrics, on a registry of our own (no process-global state).

Counters and histograms are updated where things happen (scheduler, dispatcher); gauges that
describe the state (invocations by status, outbox depth, sink health, the state DB's write
health and its failed writes by kind) are computed at scrape time from the scheduler, the store
and the dispatcher's circuits, so they can never drift. No label ever holds a secret, an id or
a path: invocation ids would make the series unbounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from watcher.core.model import TransitionType

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
        self.transitions_silenced = _by_type(
            "fc_watcher_transitions_silenced",
            "Transitions an active silence held back from the alerting sinks, by type",
            self.registry,
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
        self.api_requests = PromCounter(
            "fc_watcher_api_requests",
            "FC API requests by operation (get, list, stop) and outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        for operation in ("get", "list", "stop"):
            self.api_requests.labels(operation, "ok")  # every operation shows from the start
        self.scans = PromCounter(
            "fc_watcher_scans",
            "List-based scans of a function, by result (ok, failed)",
            ["result"],
            registry=self.registry,
        )
        self._collectors: list[Collector] = []

    def watch_state(self, collector: Collector) -> None:
        """Register scrape-time gauges; the daemon's read the scheduler and the store."""
        if not any(type(c) is type(collector) for c in self._collectors):
            self._collectors.append(collector)
            self.registry.register(collector)

    def watch_sinks(
        self, readings: Callable[[], Iterable[SinkReading]], now_s: Callable[[], float]
    ) -> None:
        """Register the sinks' health gauges, read at scrape time from the dispatcher."""
        self.watch_state(SinkHealthCollector(readings, now_s))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


def _by_type(name: str, documentation: str, registry: CollectorRegistry) -> PromCounter:
    """A counter by transition type, every type exported from 0 so that ``increase()`` sees
    the first one."""
    counter = PromCounter(name, documentation, ["type"], registry=registry)
    for kind in TransitionType:
        counter.labels(kind.value)
    return counter


class SinkReading(NamedTuple):
    """One sink's health as the dispatcher knows it."""

    sink: str
    up: bool
    last_success_s: float
    """Wall-clock seconds of the last delivery (or of the start, before the first)."""


class SinkHealthCollector(Collector):
    """``fc_watcher_sink_up`` and ``fc_watcher_sink_seconds_since_success``, computed at
    scrape time, so the age grows between sends without anyone updating it."""

    def __init__(
        self, readings: Callable[[], Iterable[SinkReading]], now_s: Callable[[], float]
    ) -> None:
        self._readings = readings
        self._now_s = now_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "fc_watcher_sink_up",
            "1 while the sink is healthy (circuit closed), 0 while it is down (circuit open)",
            labels=["sink"],
        )
        since = GaugeMetricFamily(
            "fc_watcher_sink_seconds_since_success",
            "Seconds since the sink last confirmed a delivery (or since start)",
            labels=["sink"],
        )
        now_s = self._now_s()
        for reading in self._readings():
            up.add_metric([reading.sink], 1.0 if reading.up else 0.0)
            since.add_metric([reading.sink], max(0.0, now_s - reading.last_success_s))
        yield up
        yield since
