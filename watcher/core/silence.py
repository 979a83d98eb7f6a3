"""Silences: hold matching transitions back from the alerting sinks for a while. Pure: no I/O.

A silence is a route match (the same matchers, globs for service, function and qualifier)
over a window of wall-clock time, ``[starts_ms, ends_ms)``, that an expiry can end early. A
matching transition observed inside it is silenced: still recorded and still sent to the
``log`` sinks (the record stays whole), but no outbox row is made for any other sink, so
nothing silenced is ever sent, not even after the silence ends. The parsers check what people
type and the API is sent, with one-line errors naming the field as the caller spells it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watcher.core.invocation import Status
from watcher.core.model import Transition, TransitionType
from watcher.core.route import RouteMatch, Target, matches

MAX_COMMENT_CHARS = 1000
MAX_AUTHOR_CHARS = 100
LIST_MATCHERS = ("type", "status", "previous_status")
NAME_MATCHERS = ("service", "function", "qualifier")
MATCHER_NAMES = (*LIST_MATCHERS, *NAME_MATCHERS, "label.KEY")
_GLOB = re.compile(r"[A-Za-z0-9_*?!\[\]-]{1,128}")
_STATUSES = {status.value.lower(): status.value for status in Status}
_TYPES = {t.value: t.value for t in TransitionType} | {
    t.value.removeprefix("invocation."): t.value for t in TransitionType
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class SilenceError(ValueError):
    """A silence that cannot be made: the message says which part, and how to fix it."""


@dataclass(frozen=True, slots=True)
class SilenceSpec:
    """A checked request for a silence: everything but the id the store gives it."""

    match: RouteMatch
    starts_ms: int
    ends_ms: int
    comment: str
    author: str


@dataclass(frozen=True, slots=True)
class Silence:
    """A recorded silence. Times are wall-clock ms, as people set them."""

    id: str
    match: RouteMatch
    starts_ms: int
    ends_ms: int
    comment: str
    author: str
    created_ms: int = 0
    expired_ms: int = 0
    """When it was ended early (0: never)."""

    @property
    def ended_ms(self) -> int:
        """When it stops silencing: its end, or its expiry if that came first."""
        return min(self.ends_ms, self.expired_ms) if self.expired_ms else self.ends_ms

    def active_at(self, ms: int) -> bool:
        """In force at ``ms``: started, and neither ended nor expired."""
        return self.starts_ms <= ms < self.ended_ms

    def state_at(self, now_ms: int) -> str:
        """``pending`` (not started), ``active`` or ``expired`` (ended, either way)."""
        if now_ms >= self.ended_ms:
            return "expired"
        return "active" if now_ms >= self.starts_ms else "pending"

    def holds(self, transition: Transition) -> bool:
        """Whether this silence silences ``transition`` (by when it was observed)."""
        return self.active_at(transition.observed_ms) and matches(self.match, transition)


def silencer_of(transition: Transition, silences: Iterable[Silence]) -> str | None:
    """The id of the silence that holds ``transition`` back, or None. Of several, the one
    that ends last (then the smallest id): the one that explains it longest, chosen the same
    way whatever order the silences come in."""
    holding = [s for s in silences if s.holds(transition)]
    if not holding:
        return None
    return min(holding, key=lambda s: (-s.ended_ms, s.id)).id


def hold_back(
    transitions: Sequence[Transition],
    routes: Mapping[str, Sequence[Target]],
    silences: Collection[Silence],
    log_sinks: Collection[str],
) -> tuple[dict[str, list[Target]], dict[str, str]]:
    """``routes`` without the non-log targets of the silenced transitions, and the silence
    that holds each silenced one back (transition id -> silence id)."""
    result = {tid: list(targets) for tid, targets in routes.items()}
    silenced: dict[str, str] = {}
    if not silences:
        return result, silenced
    for transition in transitions:
        silence_id = silencer_of(transition, silences)
        if silence_id is None:
            continue
        silenced[transition.id] = silence_id
        kept = [t for t in result.get(transition.id, ()) if t.sink in log_sinks]
        result[transition.id] = kept
    return result, silenced


# -- matchers ---------------------------------------------------------------------------------


def parse_matchers(pairs: Iterable[tuple[str, object]]) -> RouteMatch:
    """The route match ``pairs`` describe; list matchers given more than once add up (and take
    ``A|B``), a name or label given twice with different values is refused."""
    lists: dict[str, list[Any]] = {}
    names: dict[str, str] = {}
    labels: dict[str, str] = {}
    for name, value in pairs:
        if name in LIST_MATCHERS:
            lists.setdefault(name, []).extend(_list_values(name, value))
        elif name in NAME_MATCHERS:
            _set_once(names, name, _glob(name, value), name)
        elif name == "labels" and isinstance(value, Mapping):
            for key, text in value.items():
                _set_once(labels, str(key), _label(f"labels.{key}", text), f"labels.{key}")
        elif name.startswith(("label.", "labels.")) and name.partition(".")[2]:
            _set_once(labels, name.partition(".")[2], _label(name, value), name)
        else:
            known = ", ".join(MATCHER_NAMES)
            raise SilenceError(f"unknown matcher {name!r}; matchers: {known}")
    if not (lists or names or labels):
        raise SilenceError(
            "a silence needs at least one matcher (e.g. function=transcode); "
            "to silence every transition: function=*"
        )
    unique = {name: list(dict.fromkeys(values)) for name, values in lists.items()}
    return RouteMatch.model_validate({**unique, **names, "labels": labels})


def _set_once(into: dict[str, str], key: str, value: str, shown: str) -> None:
    if into.get(key, value) != value:
        raise SilenceError(f"matcher {shown} given twice; give it once (globs: function=enc-*)")
    into[key] = value


def _list_values(name: str, value: object) -> list[str | None]:
    if value is None and name == "previous_status":
        return [None]
    items = value.split("|") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise SilenceError(f"matcher {name} takes a string (A|B for several) or a list")
    return [_list_value(name, item) for item in items]


def _list_value(name: str, item: object) -> str | None:
    text = item.strip() if isinstance(item, str) else item
    if name == "previous_status" and text in (None, "null", "none"):
        return None  # a first sighting has no previous status
    if name == "type" and isinstance(text, str) and text in _TYPES:
        return _TYPES[text]
    if name != "type" and isinstance(text, str) and text.lower() in _STATUSES:
        return _STATUSES[text.lower()]
    known = sorted({*_TYPES.values()} if name == "type" else _STATUSES.values())
    extra = " or null (a first sighting)" if name == "previous_status" else ""
    raise SilenceError(f"matcher {name}: {item!r} is not one of {', '.join(known)}{extra}")


def _glob(name: str, value: object) -> str:
    if not isinstance(value, str) or _GLOB.fullmatch(value) is None:
        raise SilenceError(
            f"matcher {name}: {value!r} is not a name or glob (letters, digits, _ - * ? [ ])"
        )
    return value


def _label(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise SilenceError(f"matcher {name} takes a string value")
    return value


def matchers_json(match: RouteMatch) -> dict[str, Any]:
    """The JSON-ready form stored and shown: only the matchers given."""
    document = match.model_dump(mode="json", exclude_none=True)
    if not document.get("labels"):
        document.pop("labels", None)
    return document


def describe(match: RouteMatch) -> str:
    """One line: ``function=transcode status=Failed|Expired label.team=media``."""
    document = matchers_json(match)
    labels = document.pop("labels", {})
    parts = [
        f"{name}={'|'.join('null' if v is None else str(v) for v in value)}"
        if isinstance(value, list)
        else f"{name}={value}"
        for name, value in document.items()
    ]
    return " ".join(parts + [f"label.{key}={value}" for key, value in sorted(labels.items())])


# -- times ------------------------------------------------------------------------------------


def parse_duration_ms(text: object, field: str) -> int:
    """``30m``, ``2h``, ``1d``, ``1h30m`` (units ms s m h d w), or a number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        duration_ms = int(text * 1000)
    elif isinstance(text, str) and (spec := text.strip().replace(" ", "")):
        if _DURATION.sub("", spec) or not _DURATION.match(spec):
            raise SilenceError(f"{field} {text!r} is not a duration; write e.g. 30m, 2h or 1d")
        duration_ms = sum(int(float(n) * _UNIT_MS[unit]) for n, unit in _DURATION.findall(spec))
    else:
        raise SilenceError(f"{field} takes a duration such as 30m, 2h or 1d")
    if duration_ms <= 0:
        raise SilenceError(f"{field} must be longer than 0 (e.g. 2h)")
    return duration_ms


def parse_time_ms(text: object, field: str) -> int:
    """An ISO 8601 time with its zone (``2026-12-07T08:00:00Z``) as wall-clock ms."""
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise SilenceError(f"{field} {text!r} is not a time; write e.g. 2026-12-07T08:00:00Z")
    if moment.tzinfo is None:
        raise SilenceError(f"{field} {text!r} has no time zone; add Z for UTC or +08:00")
    return int(moment.timestamp() * 1000)


def format_ms(ms: int) -> str:
    """Wall-clock ms as ISO 8601 UTC, to the second: ``2026-12-07T08:00:00Z``."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def check_silence(
    *,
    match: RouteMatch,
    window: tuple[int | None, int | None, int | None],
    comment: object,
    author: object,
    now_ms: int,
    names: Mapping[str, str],
) -> SilenceSpec:
    """A checked silence. ``window`` is (starts_ms, ends_ms, duration_ms), None where not
    given: it starts now by default, and needs exactly one of an end and a duration.
    ``names`` says how the caller spells the fields (keys starts, ends, duration, comment,
    author)."""
    starts_ms, ends_ms, duration_ms = window
    if ends_ms is not None and duration_ms is not None:
        raise SilenceError(f"give {names['ends']} or {names['duration']}, not both")
    if duration_ms is not None and duration_ms <= 0:
        raise SilenceError(f"{names['duration']} must be longer than 0 (e.g. 2h)")
    starts_ms = now_ms if starts_ms is None else starts_ms
    ends_ms = starts_ms + duration_ms if duration_ms is not None else ends_ms
    if ends_ms is None:
        raise SilenceError(
            f"a silence needs an end: {names['duration']} (e.g. 2h) or {names['ends']} (a time)"
        )
    if ends_ms <= now_ms:
        raise SilenceError(f"{names['ends']} {format_ms(ends_ms)} is already past")
    if ends_ms <= starts_ms:
        raise SilenceError(f"{names['ends']} must come after the start ({format_ms(starts_ms)})")
    return SilenceSpec(
        match,
        starts_ms,
        ends_ms,
        _text(comment, names["comment"], MAX_COMMENT_CHARS, "why (e.g. re-encode backlog)"),
        _text(author, names["author"], MAX_AUTHOR_CHARS, "who"),
    )


def _text(value: object, field: str, limit: int, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise SilenceError(f"a silence needs {field}: say {what}")
    if len(text) > limit:
        raise SilenceError(f"{field} is {len(text)} characters; keep it to {limit}")
    return text
