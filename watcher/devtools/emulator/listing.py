"""The List call's rules, as pure functions: reading its query, and choosing one page of keys.

FC 2.0 and FC 3.0 name some parameters and the result key differently; this module holds those
differences. It must not touch HTTP, the clock or the timelines: the app hands it the function's
candidates (``index.FunctionIndex``, already filtered by status and in start order), renders the
bodies of the chosen keys and sends the page.

``ListQuery``/``list_page`` are the first, naive form (every body rendered, a bare number as the
token). The app no longer uses them; they stay only while tests/unit/test_emulator_units.py
still tests them, and go with those two tests.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from watcher.core.invocation import Api
from watcher.devtools.emulator.auth import Denial
from watcher.devtools.emulator.index import SortKey
from watcher.devtools.emulator.tokens import Cursor, Keyset, Offset, TokenMode, decode

RETENTION_MS = 7 * 86_400_000
"""FC keeps a task queryable for 7 days after it started."""

_INTEGER = re.compile(r"-?[0-9]{1,18}")
_BOOLEANS = {"true": True, "false": False}  # matched case-insensitively: the SDK sends "True"


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A List call's parameters, parsed and checked; ``None`` means not given."""

    limit: int
    cursor: Cursor | None
    begin_ms: int | None
    end_ms: int | None
    prefix: str
    qualifier: str | None
    status: str | None
    include_payload: bool
    descending: bool


@dataclass(frozen=True, slots=True)
class Page:
    """The keys of one page, in the order served, and where the next page starts."""

    keys: list[SortKey]
    next_cursor: Cursor | None


def _invalid(message: str) -> Denial:
    return Denial(400, "InvalidArgument", message)


def _integer(query: Mapping[str, str], name: str) -> int | Denial | None:
    text = query.get(name) or None  # an empty parameter is an absent one
    if text is None:
        return None
    if _INTEGER.fullmatch(text) is None:
        return _invalid(f"{name} must be an integer, not {text[:40]!r}")
    return int(text)


def parse_list_request(
    api: Api, query: Mapping[str, str], *, tokens: TokenMode
) -> ListRequest | Denial:
    """The parameters of a List call, or the 400 FC answers to a malformed one."""
    numbers = [_integer(query, name) for name in ("limit", "startedTimeBegin", "startedTimeEnd")]
    for number in numbers:
        if isinstance(number, Denial):
            return number
    limit, begin_ms, end_ms = (n if isinstance(n, int) else None for n in numbers)
    if limit is not None and not 1 <= limit <= 100:
        return _invalid("limit must be in [1, 100]")
    order = query.get("sortOrderByTime") or "asc"
    if order not in ("asc", "desc"):
        return _invalid(f"sortOrderByTime must be asc or desc, not {order[:40]!r}")
    include_payload = _BOOLEANS.get((query.get("includePayload") or "false").lower())
    if include_payload is None:
        return _invalid("includePayload must be true or false")
    token = query.get("nextToken") or ""
    cursor = decode(token, tokens) if token else None
    if token and cursor is None:
        return _invalid("nextToken is invalid")
    return ListRequest(
        limit=limit or (50 if api is Api.FC2 else 20),
        cursor=cursor,
        begin_ms=begin_ms,
        end_ms=end_ms,
        prefix=query.get("invocationIdPrefix" if api is Api.FC2 else "prefix") or "",
        qualifier=query.get("qualifier") or None,
        status=query.get("status") or None,
        include_payload=include_payload,
        descending=order == "desc",
    )


def select_page(
    candidates: Sequence[SortKey],
    request: ListRequest,
    *,
    tokens: TokenMode,
    floor_ms: int | None = None,
    accept: Callable[[SortKey], bool] | None = None,
) -> Page:
    """One page of ``candidates`` (sorted ascending) under ``request``'s time range, cursor,
    order and prefix, and ``accept`` (what the keys cannot tell, such as the qualifier).

    ``floor_ms`` is the oldest start still queryable. Cost: two bisects, then one step per
    candidate looked at, which is the page itself unless a prefix or ``accept`` refuses many.
    """
    floors = [ms for ms in (request.begin_ms, floor_ms) if ms is not None]
    low = bisect.bisect_left(candidates, (max(floors), "")) if floors else 0
    high = len(candidates)
    if request.end_ms is not None:
        high = bisect.bisect_left(candidates, (request.end_ms + 1, ""))
    skip = 0
    if isinstance(request.cursor, Keyset):
        after = (request.cursor.started_ms, request.cursor.invocation_id)
        if request.descending:
            high = min(high, bisect.bisect_left(candidates, after))
        else:
            low = max(low, bisect.bisect_right(candidates, after))
    elif isinstance(request.cursor, Offset):
        skip = request.cursor.position
    positions = range(high - 1, low - 1, -1) if request.descending else range(low, high)
    prefix = request.prefix
    if not prefix and accept is None:
        chosen = [candidates[at] for at in positions[skip : skip + request.limit + 1]]
    else:
        keys = (candidates[at] for at in positions)
        wanted = (k for k in keys if k[1].startswith(prefix) and (accept is None or accept(k)))
        chosen = list(islice(wanted, skip, skip + request.limit + 1))
    keys_served = chosen[: request.limit]
    if len(chosen) <= request.limit:  # one more was looked for: none means the last page
        return Page(keys_served, None)
    if tokens == "offset":
        return Page(keys_served, Offset(skip + request.limit))
    return Page(keys_served, Keyset(*keys_served[-1]))


def page_body(api: Api, items: Sequence[bytes], next_token: str) -> bytes:
    """The List answer around already-encoded items."""
    name = b"invocations" if api is Api.FC2 else b"tasks"
    token = json.dumps(next_token).encode()
    return b'{"' + name + b'":[' + b",".join(items) + b'],"nextToken":' + token + b"}"


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
