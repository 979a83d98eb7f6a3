"""Gauges read at scrape time from the scheduler and the store's backlog cache, so they never
drift and a scrape never touches the database."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from watcher.store.protocols import StatusReader


class StateCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(
        self, statuses: Callable[[], Counter[str]], store: Callable[[], StatusReader | None]
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
        for row in store.cached_backlog():  # memory, not the DB: a scrape costs nothing
            depth.add_metric([row.sink], row.pending)
            oldest.add_metric(
                [row.sink], max(0, now_ms - row.oldest_created_ms) / 1000 if row.pending else 0
            )
            dead.add_metric([row.sink], row.dead)
        yield depth
        yield oldest
        yield dead
