"""The API demand of what is tracked, against the budget: how much every interval stretches.

The budget (``poll.api_budget_per_s``) is shared by every FC call. When polling and scans ask
for more than it allows, the limiter serves them in due order, so every invocation's effective
interval stretches by the same factor and none starves; this computes that factor for the
metric and for ``status``.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def info_values(demand: ApiDemand) -> dict[str, str]:
    """The demand as the daemon records it for ``status``: rounded, so that noise in the
    adaptive intervals does not make a write every time."""
    return {
        "api_demand_per_s": f"{demand.demand_per_s:.1f}",
        "api_budget_per_s": "" if demand.budget_per_s is None else f"{demand.budget_per_s:g}",
        "interval_stretch": f"{demand.stretch:.1f}",
    }


def budget_line(info: Mapping[str, tuple[str, int]]) -> str | None:
    """The API line of ``status``, from what the daemon recorded (None if it never did)."""
    if "api_demand_per_s" not in info:
        return None
    demand = info["api_demand_per_s"][0]
    budget = info.get("api_budget_per_s", ("", 0))[0]
    stretch = float(info.get("interval_stretch", ("1", 0))[0])
    if not budget:
        return f"FC API: {demand} calls/s asked, no budget set (poll.api_budget_per_s)"
    line = f"FC API: {demand} calls/s asked of a budget of {budget}/s"
    if stretch > 1.0:
        line += f": every interval stretched {stretch:.1f}x (raise the budget, or track less)"
    return line
