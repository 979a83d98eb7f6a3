"""The Jinja2 environment of the console: templates from the package, escaping always on.

Everything the pages show from FC or from functions (error messages, event details, payload
excerpts, labels, names) is escaped by Jinja2's autoescape, in text and in attributes alike;
links put ids through ``quote`` with nothing kept safe, so a name can never end a path or add
a query. No template marks data ``|safe``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from watcher.core.text import short_duration

_MS_PER_S = 1000


def when(ms: int | None) -> str:
    """A wall time (epoch ms) as people read it, in UTC; "-" for none."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / _MS_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ms: int | None) -> str:
    """A wall time for a ``<time datetime>`` attribute."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / _MS_PER_S, UTC).isoformat(timespec="seconds")


def duration(ms: int) -> str:
    """A short human duration: 42s, 3m05s, 2h10m, 4d03h."""
    return short_duration(ms)


def ago(ms: int | None, now_ms: int) -> str:
    """How long before ``now_ms`` the wall time ``ms`` was ("-" for none)."""
    if not ms:
        return "-"
    if ms > now_ms:
        return "in " + duration(ms - now_ms)
    return duration(now_ms - ms) + " ago"


def due(ms: int, now_ms: int) -> str:
    """When something is due: "in 42s", or "now" once the time has come."""
    return "in " + duration(ms - now_ms) if ms > now_ms else "now"


def invocation_url(key: str) -> str:
    """The path of one invocation's page: the key is one path segment, slashes and all."""
    return "/invocations/" + quote(key, safe="")


def path_segment(text: str) -> str:
    """``text`` as one path segment: nothing kept safe, not even "/"."""
    return quote(text, safe="")


def query_url(path: str, params: Mapping[str, Any]) -> str:
    """``path`` with the given parameters, empty ones left out."""
    kept = {name: str(value) for name, value in params.items() if value not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def environment() -> jinja2.Environment:
    """The environment: package templates, autoescape on for every template, strict names."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("watcher.daemon.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, iso=iso, duration=duration, ago=ago, due=due)
    env.globals.update(
        invocation_url=invocation_url, query_url=query_url, path_segment=path_segment
    )
    return env


def render(
    env: jinja2.Environment, name: str, context: Mapping[str, Any], *, block: str | None
) -> str:
    """Template ``name`` whole, or only its ``block`` (the live region a page refreshes)."""
    template = env.get_template(name)
    if block is None or block not in template.blocks:  # an error page is whole, refreshed or not
        return template.render(context)
    return "".join(template.blocks[block](template.new_context(dict(context))))
