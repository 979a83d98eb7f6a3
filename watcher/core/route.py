"""Which sinks each transition goes to, with which severity and template. Pure: no I/O.

Routes are tried in order; the first that matches wins, unless it says ``continue: true``.
With no routes at all, every transition goes to every ``log`` sink.
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
