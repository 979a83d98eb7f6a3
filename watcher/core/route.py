"""Which sinks each transition goes to, with which severity and template. Pure: no I/O.

Routes are tried in order; the first that matches wins, unless it says ``continue: true``.
With no routes at all, the defaults fit "alert me when tasks fail": every transition goes to
every ``log`` sink, and the alert-worthy ones (``alert_worthy``) to every other sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watcher.core.model import Transition, TransitionType
from watcher.core.render import check_template

SinkName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class RouteMatch(_Section):
    """Conditions on a transition; all given ones must hold. Globs for names."""

    type: list[TransitionType] | None = None
    status: list[str] | None = None
    previous_status: list[str | None] | None = None
    service: str | None = None
    function: str | None = None
    qualifier: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    _lists = field_validator("type", "status", "previous_status", mode="before")(_as_list)


class Route(_Section):
    """Send matching transitions to ``sinks``. The first match wins unless ``continue``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    match: RouteMatch = RouteMatch()
    sinks: list[SinkName] = Field(min_length=1)
    severity: Literal["critical", "warning", "info"] = "warning"
    template: str | None = None
    """A message template with ``{field}`` placeholders (see README)."""
    continue_: bool = Field(False, alias="continue")

    @model_validator(mode="after")
    def _template_fields(self) -> Route:
        if self.template is not None:
            check_template(self.template)
        return self


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


FAILURE_STATUSES = frozenset({"Failed", "Expired", "Stopped", "Invalid"})
"""Statuses that end an invocation badly: always worth an alert."""
_ALERT_TYPES = frozenset(
    {TransitionType.STUCK, TransitionType.NOT_FOUND, TransitionType.POLL_FAILING}
)


def alert_worthy(transition: Transition) -> str | None:
    """The severity to alert with when no routes are configured, or None for log only.

    A bad ending is critical; the first Retrying of an invocation (not each retry after it),
    a stuck, a vanished or an unpollable invocation is a warning; polling that recovers after
    ``poll_failing`` is the info that clears it.
    """
    if transition.type is TransitionType.STATUS_CHANGED:
        if transition.status in FAILURE_STATUSES:
            return "critical"
        summary = transition.invocation
        first_retry = summary is not None and summary.already_retried_times <= 1
        if transition.status == "Retrying" and transition.previous_status != "Retrying":
            return "warning" if first_retry else None
        return None
    if transition.type is TransitionType.POLL_RECOVERED:
        return "info"  # the all-clear for a poll_failing alert (Alertmanager resolves it)
    return "warning" if transition.type in _ALERT_TYPES else None


def default_targets(
    transition: Transition, log_sinks: Sequence[str], alert_sinks: Sequence[str]
) -> list[Target]:
    """Where a transition goes when no routes are configured."""
    targets = [Target(sink) for sink in log_sinks]
    severity = alert_worthy(transition) if alert_sinks else None
    if severity is not None:
        targets.extend(Target(sink, severity) for sink in alert_sinks)
    return targets


def route(
    transitions: Sequence[Transition],
    routes: Sequence[Route],
    log_sinks: Sequence[str],
    alert_sinks: Sequence[str] = (),
) -> dict[str, list[Target]]:
    """Map each transition id to its targets; a sink appears at most once per transition.

    ``alert_sinks`` (every sink that is not a log sink) matter only when ``routes`` is empty.
    """
    result: dict[str, list[Target]] = {}
    for transition in transitions:
        if not routes:
            result[transition.id] = default_targets(transition, log_sinks, alert_sinks)
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


def _describe_match(match: RouteMatch) -> str:
    parts = [
        f"{name}={'|'.join(str(v) for v in values)}"
        for name, values in (
            ("type", match.type),
            ("status", match.status),
            ("previous_status", match.previous_status),
        )
        if values is not None
    ]
    parts += [
        f"{name}={value}"
        for name, value in (
            ("service", match.service),
            ("function", match.function),
            ("qualifier", match.qualifier),
        )
        if value is not None
    ]
    parts += [f"labels.{key}={value}" for key, value in sorted(match.labels.items())]
    return " ".join(parts) or "every transition"


def effective_routes(
    routes: Sequence[Route], log_sinks: Sequence[str], alert_sinks: Sequence[str]
) -> list[tuple[str, str, str]]:
    """(what matches, which sinks, severity) rows, in the order they are tried, defaults
    included: what ``fc-watcher check`` prints, so nobody has to guess."""
    if routes:
        return [
            (
                _describe_match(r.match) + (" (continue)" if r.continue_ else ""),
                ", ".join(r.sinks),
                r.severity,
            )
            for r in routes
        ]
    rows: list[tuple[str, str, str]] = []
    if log_sinks:
        rows.append(("every transition", ", ".join(log_sinks), "info"))
    if alert_sinks:
        sinks = ", ".join(alert_sinks)
        failures = "|".join(sorted(FAILURE_STATUSES))
        rows.append((f"status={failures}", sinks, "critical"))
        rows.append(("first status=Retrying of an invocation", sinks, "warning"))
        kinds = "|".join(sorted(t.value for t in _ALERT_TYPES))
        rows.append((f"type={kinds}", sinks, "warning"))
        rows.append((f"type={TransitionType.POLL_RECOVERED.value}", sinks, "info"))
    return rows
