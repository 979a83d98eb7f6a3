"""The console's query parameters: read strictly, kept in the URL so a view can be shared.

A bad value is a ``ParamError`` with a sentence for the page (400), never a guess: a list
that silently dropped a mistyped filter would look like an answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from watcher.store.sqlite.console_reads import InvocationFilter

MAX_PAGE = 10_000
_TEXT_CHARS = 256
_DURATION = re.compile(r"(\d{1,6})\s*([smhd])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ParamError(ValueError):
    """A query parameter the console cannot use; the message says which and what it takes."""


def duration_ms(text: str) -> int:
    """``90m``, ``24h``, ``7d`` as milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ParamError(f"{text[:40]!r} is not a duration like 90m, 24h or 7d")
    return int(match[1]) * _UNIT_MS[match[2]]


def parse_time(text: str, now_ms: int) -> int:
    """A time given as a duration back from now (``24h``) or an ISO date or date-time (UTC
    unless it says otherwise), as epoch ms."""
    text = text.strip()
    if _DURATION.fullmatch(text):
        return now_ms - duration_ms(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ParamError(
            f"{text[:40]!r} is neither a duration (24h, 7d) nor a date (2026-05-01T08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def page_number(text: str | None) -> int:
    """A page number, from 1 to ``MAX_PAGE``; 1 when not given."""
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ParamError(f"page must be a number from 1 to {MAX_PAGE}")
    return int(text)


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name, "").strip()
    if len(value) > _TEXT_CHARS:
        raise ParamError(f"{name} is longer than {_TEXT_CHARS} characters")
    return value or None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The invocation list's parameters as given (for the form and the links) and as read."""

    function: str | None
    status: str | None
    since: str | None
    page: int
    where: InvocationFilter

    def params(self, **changes: object) -> dict[str, object]:
        """The parameters of this view, with ``changes`` (e.g. another page)."""
        values: dict[str, object] = {
            "function": self.function,
            "status": self.status,
            "since": self.since,
            "page": self.page if self.page > 1 else None,
        }
        values.update(changes)
        return values


def list_query(query: Mapping[str, str], now_ms: int) -> ListQuery:
    """The invocation list's parameters from a request's query."""
    function, status, since = (_text(query, name) for name in ("function", "status", "since"))
    since_ms = parse_time(since, now_ms) if since else None
    page = page_number(query.get("page"))
    return ListQuery(function, status, since, page, InvocationFilter(function, status, since_ms))
