"""What the daemon says about itself: systemd's STATUS= line and readiness (/readyz and
``fc_watcher_ready``). Read from memory only: both run every few seconds."""

from __future__ import annotations

from collections import Counter

from watcher.config.models import Config
from watcher.core.clock import Clock
from watcher.daemon.build import Parts
from watcher.daemon.demand import api_demand
from watcher.store.protocols import StateStore


def status_counts(parts: Parts | None) -> Counter[str]:
    """Tracked invocations by last known status."""
    if parts is None:
        return Counter()
    return Counter(
        (snapshot.status if snapshot and snapshot.status else "unknown")
        for snapshot in parts.scheduler.snapshots().values()
    )


def status_line(parts: Parts | None, store: StateStore | None) -> str:
    """One line for systemd's STATUS=; a failing state DB first, as ``systemctl status`` may
    cut the line short; a stretched API budget last."""
    counts = status_counts(parts)
    # From the store's cache: a STATUS line every watchdog period must not scan the DB.
    backlog = store.cached_backlog() if store else ()
    pending = sum(row.pending for row in backlog)
    health = store.write_health() if store else None
    failing = f"state DB failing: {health.describe()}; " if health and not health.ok else ""
    line = (
        f"{failing}tracking {sum(counts.values())} invocations, "
        f"{counts.get('Failed', 0)} failed, outbox {pending}"
    )
    if parts is not None:
        stretch = api_demand(parts.scheduler, parts.discovery).stretch
        if stretch > 1.0:
            line += f", intervals stretched {stretch:.1f}x by the API budget"
    return line


def readiness(
    parts: Parts | None, store: StateStore | None, config: Config, clock: Clock
) -> str | None:
    """None when ready, else why not: starting, the state DB's writes failing (until one
    succeeds again), or no poll finished lately."""
    if store is None or parts is None:
        return "starting"
    health = store.write_health()
    if not health.ok:
        return f"state DB failing: {health.describe()}: {health.reason}"
    scheduler = parts.scheduler
    if scheduler.active_count == 0:
        return None
    last = scheduler.last_poll_finished_s
    limit_s = 2 * config.poll.max_interval_s + config.fc.timeout_s
    if last is None or clock.monotonic() - last > limit_s:
        return f"no poll finished in the last {limit_s:g} s"
    return None
