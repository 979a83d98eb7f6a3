"""Gauges read at scrape time from the scheduler and the store's memory (its backlog cache and
its write health), so they never drift and a scrape never touches the database.

``fc_watcher_state_db_healthy`` is 0 from a failed write of the state DB until one succeeds;
``fc_watcher_state_db_failed_writes_total`` counts failed writes by kind (``disk_full``,
``read_only``...), every kind exported from 0 so that ``increase()`` sees the first failure.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from watcher.daemon.build import Parts
from watcher.daemon.demand import api_demand
from watcher.store.errors import FailureKind
from watcher.store.protocols import StatusReader, WriteHealthSource


class StateCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(
        self, statuses: Callable[[], Counter[str]], store: Callable[[], StatusReader | None]
    ) -> None:
        self._statuses = statuses
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        tracked = GaugeMetricFamily(
            "fc_watcher_invocations", "Tracked invocations by last known status", labels=["status"]
        )
        for status, count in sorted(self._statuses().items()):
            tracked.add_metric([status], count)
        yield tracked
        store = self._store()
        if store is None:
            return
        yield from _write_health(store)
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
        for row in store.cached_backlog():  # memory, not the DB: a scrape costs nothing
            depth.add_metric([row.sink], row.pending)
            oldest.add_metric(
                [row.sink], max(0, now_ms - row.oldest_created_ms) / 1000 if row.pending else 0
            )
            dead.add_metric([row.sink], row.dead)
        yield depth
        yield oldest
        yield dead


def _write_health(store: WriteHealthSource) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    health = store.write_health()
    yield GaugeMetricFamily(
        "fc_watcher_state_db_healthy",
        "1 while the state DB's writes succeed, 0 from a failed write until one succeeds",
        value=1 if health.ok else 0,
    )
    failed = CounterMetricFamily(
        "fc_watcher_state_db_failed_writes",
        "Writes of the state DB that failed, by kind of failure",
        labels=["kind"],
    )
    for kind in FailureKind:
        failed.add_metric([kind.value], health.failed_by_kind.get(kind.value, 0))
    yield failed


class TrackingCollector(Collector):
    """What is tracked and what it costs: invocations by how they were found, the API demand
    against the budget, and the stretch of every interval when the budget is short."""

    def __init__(self, parts: Parts, ready: Callable[[], bool]) -> None:
        self._parts = parts
        self._ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "fc_watcher_ready",
            "1 while /readyz answers ready (state DB writes work, polls finish), else 0",
            value=1 if self._ready() else 0,
        )
        scheduler = self._parts.scheduler
        tracked = GaugeMetricFamily(
            "fc_watcher_tracked",
            "Tracked invocations by how they were found (listed, discovered, live)",
            labels=["found_by"],
        )
        counts = scheduler.tracked.found_by_counts()
        for found_by in ("listed", "discovered", "live"):
            tracked.add_metric([found_by], counts.get(found_by, 0))
        yield tracked
        yield GaugeMetricFamily(
            "fc_watcher_tracked_limit", "poll.max_tracked", value=scheduler.tracked.max_tracked
        )
        yield CounterMetricFamily(
            "fc_watcher_tracking_refused",
            "Invocations not tracked because the tracked set was at poll.max_tracked",
            value=scheduler.tracked.refused,
        )
        demand = api_demand(scheduler, self._parts.discovery)
        yield GaugeMetricFamily(
            "fc_watcher_api_demand_per_second",
            "FC calls a second that polling and scans ask for at their intervals",
            value=demand.demand_per_s,
        )
        yield GaugeMetricFamily(
            "fc_watcher_interval_stretch_ratio",
            "How much every interval stretches because the API budget is short (1: not at all)",
            value=demand.stretch,
        )


class SilenceCollector(Collector):
    """``fc_watcher_silences_active``: the silences in force now, from the daemon's own set
    (refreshed from the state DB every half second), so a scrape never touches the DB."""

    def __init__(self, active: Callable[[], int]) -> None:
        self._active = active

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "fc_watcher_silences_active",
            "Silences in force now (started, neither ended nor expired)",
            value=self._active(),
        )
