"""Which sinks each transition goes to, with which severity and template. Pure: no I/O.

Routes are tried in order; the first that matches wins, unless it says ``continue: true``.
With no routes at all, every transition goes to every ``log`` sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from watcher.delivery_config import Route, RouteMatch
from watcher.model import Transition


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery: a sink, and how to present the transition there."""

    sink: str
    severity: str = "info"
    template: str | None = None


def matches(match: RouteMatch, transition: Transition) -> bool:
    """Whether every condition of ``match`` holds for ``transition``."""
    fn = transition.ref.function_ref
    checks = (
        match.type is None or transition.type in match.type,
        match.status is None or transition.status in match.status,
        match.previous_status is None or transition.previous_status in match.previous_status,
        match.service is None or fnmatchcase(fn.service or "", match.service),
        match.function is None or fnmatchcase(fn.function, match.function),
        match.qualifier is None or fnmatchcase(fn.qualifier or "", match.qualifier),
        all(transition.labels.get(key) == value for key, value in match.labels.items()),
    )
    return all(checks)


def route(
    transitions: Sequence[Transition], routes: Sequence[Route], log_sinks: Sequence[str]
) -> dict[str, list[Target]]:
    """Map each transition id to its targets; a sink appears at most once per transition."""
    result: dict[str, list[Target]] = {}
    for transition in transitions:
        if not routes:
            result[transition.id] = [Target(sink) for sink in log_sinks]
            continue
        targets: dict[str, Target] = {}
        for candidate in routes:
            if not matches(candidate.match, transition):
                continue
            for sink in candidate.sinks:
                targets.setdefault(sink, Target(sink, candidate.severity, candidate.template))
            if not candidate.continue_:
                break
        result[transition.id] = list(targets.values())
    return result
