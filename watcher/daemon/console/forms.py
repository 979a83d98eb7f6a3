"""Reading the console's forms: a silence to add, the fields of a redelivery.

Matchers are checked against the route matchers' own model, so a silence can match exactly
what a route can (an unknown transition type is refused here, not stored and never matched).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from watcher.core.route import RouteMatch
from watcher.daemon.console.params import ParamError, duration_ms, parse_time

MAX_FIELD_CHARS = 1000
_GLOBS = ("service", "function", "qualifier")
_LISTS = ("status", "type")


class FormError(ValueError):
    """A form field the console cannot use; the message names it."""


def text_field(form: Mapping[str, str], name: str, *, required: bool = False) -> str:
    """A field's text, stripped; too long, or missing when required, is a ``FormError``."""
    value = form.get(name, "").strip()
    if len(value) > MAX_FIELD_CHARS:
        raise FormError(f"{name} is longer than {MAX_FIELD_CHARS} characters")
    if required and not value:
        raise FormError(f"{name} is required")
    return value


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for part in text.replace("\n", ",").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise FormError(f"labels: {part.strip()[:40]!r} is not name=value")
        labels[name.strip()] = value.strip()
    return labels


def matchers(form: Mapping[str, str]) -> dict[str, Any]:
    """The silence's matchers, JSON-ready, at least one of them."""
    wanted: dict[str, Any] = {}
    for name in _GLOBS:
        if value := text_field(form, name):
            wanted[name] = value
    for name in _LISTS:
        items = [item.strip() for item in text_field(form, name).split(",") if item.strip()]
        if items:
            wanted[name] = items
    if labels := _labels(text_field(form, "labels")):
        wanted["labels"] = labels
    if not wanted:
        raise FormError("give at least one matcher (function, status, labels...)")
    try:
        checked = RouteMatch.model_validate(wanted)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise FormError(f"{where}: {first['msg']}") from None
    dumped: dict[str, Any] = checked.model_dump(
        mode="json", exclude_none=True, exclude_defaults=True
    )
    return dumped


def silence_request(form: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """The ``add_silence`` arguments a form asks for. ``starts`` is a time (blank: now);
    ``ends`` a time or a duration from the start (``2h``)."""
    try:
        starts = text_field(form, "starts")
        starts_ms = parse_time(starts, now_ms) if starts else now_ms
        ends = text_field(form, "ends", required=True)
        try:
            ends_ms = starts_ms + duration_ms(ends)
        except ParamError:
            ends_ms = parse_time(ends, now_ms)
    except ParamError as exc:
        raise FormError(str(exc)) from None
    if ends_ms <= max(starts_ms, now_ms):
        raise FormError("the silence must end after it starts, and in the future")
    return {
        "matchers": matchers(form),
        "starts_ms": starts_ms,
        "ends_ms": ends_ms,
        "comment": text_field(form, "comment", required=True),
        "author": text_field(form, "author", required=True),
    }
