"""The API demand of what is tracked, against the budget: how much every interval stretches.

The budget (``poll.api_budget_per_s``) is shared by every FC call. When polling and scans ask
for more than it allows, the limiter serves them in due order, so every invocation's effective
interval stretches by the same factor and none starves; this computes that factor for the
metric and for ``status``.
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.core.listing import stretch_ratio
from watcher.engine.discovery import Discovery
from watcher.engine.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class ApiDemand:
    demand_per_s: float
    budget_per_s: float | None
    stretch: float


def api_demand(scheduler: Scheduler, discovery: Discovery) -> ApiDemand:
    """Gets a second for the invocations polled by Get, plus what the last scans cost."""
    demand_per_s = scheduler.tracked.get_demand_per_s(scheduler.scanned)
    demand_per_s += discovery.list_demand_per_s()
    budget_per_s = scheduler.settings.api_budget_per_s
    return ApiDemand(demand_per_s, budget_per_s, stretch_ratio(demand_per_s, budget_per_s))
