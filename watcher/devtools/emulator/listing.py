"""The List call's rules, as pure functions: reading its query, and choosing one page of bodies.

FC 2.0 and FC 3.0 name some parameters and the result key differently; this module holds those
differences. It must not touch HTTP or the clock: the app renders the bodies and sends the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watcher.core.invocation import Api
from watcher.devtools.emulator.auth import Denial


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A List call's parameters, parsed and checked."""

    limit: int
    offset: int
    begin_ms: int
    end_ms: int
    prefix: str
    include_payload: bool
    status: str | None
    descending: bool


def parse_list_query(api: Api, query: Mapping[str, str]) -> ListQuery | Denial:
    """The parameters of a List call, or the 400 FC answers to malformed ones."""
    try:
        limit = int(query.get("limit", "50" if api is Api.FC2 else "20"))
        offset = int(query.get("nextToken") or "0")
        begin_ms = int(query.get("startedTimeBegin", "0"))
        end_ms = int(query.get("startedTimeEnd", str(2**62)))
    except ValueError:
        return Denial(400, "InvalidArgument", "a numeric parameter is malformed")
    if not 1 <= limit <= 100 or offset < 0:
        return Denial(400, "InvalidArgument", "limit must be in [1, 100]")
    return ListQuery(
        limit=limit,
        offset=offset,
        begin_ms=begin_ms,
        end_ms=end_ms,
        prefix=query.get("invocationIdPrefix" if api is Api.FC2 else "prefix", ""),
        include_payload=query.get("includePayload", "false").lower() == "true",
        status=query.get("status"),
        descending=query.get("sortOrderByTime") == "desc",
    )


def list_page(api: Api, query: ListQuery, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The List answer: the matching ``bodies`` in start order, one page, and the next token.

    The token is the offset of the next page: the emulator's set of invocations is fixed.
    """
    items = [body for body in bodies if _matches(query, body)]
    if not query.include_payload:
        for body in items:
            body.pop("invocationPayload", None)
            body.pop("taskPayload", None)
    items.sort(key=lambda item: item["startedTime"], reverse=query.descending)
    end = query.offset + query.limit
    next_token = str(end) if end < len(items) else ""
    page = items[query.offset : end]
    return {"invocations" if api is Api.FC2 else "tasks": page, "nextToken": next_token}


def _matches(query: ListQuery, body: dict[str, Any]) -> bool:
    if query.status is not None and body["status"] != query.status:
        return False
    return bool(query.begin_ms <= body["startedTime"] <= query.end_ms)
