"""Parsing what the FC List and Get calls return, and the List call's filters.

The shapes are ``watcher.core.invocation``'s; this module turns response bytes into them, or
into a ``BadResponseError`` (never a guessed status). It does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError

from watcher.core.invocation import Api, Invocation, InvocationEvent, Text, _Wire
from watcher.core.text import STATE_TEXT_BYTES, replace_surrogates, truncate
from watcher.fc.errors import BadResponseError

_Body = TypeVar("_Body", bound=_Wire)


class InvocationPage(_Wire):
    """One page of a List call. ``next_token`` is empty on the last page."""

    invocations: tuple[Invocation, ...] = Field(
        (), validation_alias=AliasChoices("invocations", "tasks")
    )
    next_token: Text = Field("", validation_alias=AliasChoices("nextToken"))
    skipped: int = 0
    """Items left out because they were not invocations (no status, a wrong type...)."""


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _clean_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Every string that can become a field is a member of some object, so cleaning members as
    # the JSON is read reaches all of them without walking the document.
    return {
        replace_surrogates(key): replace_surrogates(value) if isinstance(value, str) else value
        for key, value in pairs
    }


def _validate(model: type[_Body], body: bytes, what: str) -> _Body:
    """Validate ``body``; if it is not strict JSON, read it leniently and validate that.

    The strict parser (fast, and most bodies) refuses invalid UTF-8 and lone surrogate escapes.
    FC passes through whatever bytes a function logged, and refusing the body would hide the
    invocation's outcome forever, so such bytes become U+FFFD. A body that is not JSON even so
    is still refused.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            raise BadResponseError(f"{what} body rejected ({_describe(exc)})") from None
    try:
        document = json.loads(body.decode("utf-8", "replace"), object_pairs_hook=_clean_object)
    except (ValueError, RecursionError) as exc:
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
        raise BadResponseError(f"{what} body rejected (body: not JSON: {detail})") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise BadResponseError(f"{what} body rejected ({_describe(exc)})") from None


def _event_within_cap(event: InvocationEvent) -> InvocationEvent:
    detail = truncate(event.event_detail, STATE_TEXT_BYTES)
    return (
        event if detail is event.event_detail else event.model_copy(update={"event_detail": detail})
    )


def _within_cap(invocation: Invocation) -> Invocation:
    """``invocation`` with its free text cut to ``STATE_TEXT_BYTES`` (marked), so a megabyte
    never reaches the state, a message or a log line. Ids, statuses and keys are never cut."""
    update: dict[str, Any] = {}
    for name in ("error_message", "payload", "return_payload"):
        value: str = getattr(invocation, name)
        capped = truncate(value, STATE_TEXT_BYTES)
        if capped is not value:
            update[name] = capped
    events = tuple(_event_within_cap(event) for event in invocation.events)
    if any(new is not old for new, old in zip(events, invocation.events, strict=True)):
        update["events"] = events
    return invocation.model_copy(update=update) if update else invocation


def parse_invocation(body: bytes) -> Invocation:
    """Parse a Get response body, or raise ``BadResponseError`` (never guess a status)."""
    return _within_cap(_validate(Invocation, body, "invocation"))


def parse_page(body: bytes) -> InvocationPage:
    """Parse a List response body, or raise ``BadResponseError`` if it is not a page at all.

    One malformed item must not hide the others (a scan would otherwise stall on it for as
    long as FC keeps listing it): such items are left out and counted in ``skipped``.
    """
    try:
        page = _validate(InvocationPage, body, "list")
    except BadResponseError:
        page = _page_item_by_item(body)
    invocations = tuple(_within_cap(invocation) for invocation in page.invocations)
    return page.model_copy(update={"invocations": invocations})


def _page_item_by_item(body: bytes) -> InvocationPage:
    """A page whose items are validated one by one, the bad ones left out."""
    try:
        document = json.loads(body.decode("utf-8", "replace"), object_pairs_hook=_clean_object)
    except (ValueError, RecursionError):
        raise BadResponseError("list body rejected (body: not JSON)") from None
    items = (
        document.get("invocations", document.get("tasks")) if isinstance(document, dict) else None
    )
    if not isinstance(items, list):
        raise BadResponseError("list body rejected (no list of invocations or tasks)")
    good: list[Invocation] = []
    for item in items:
        try:
            good.append(Invocation.model_validate(item))
        except ValidationError:
            continue
    try:
        token = InvocationPage.model_validate({"nextToken": document.get("nextToken")})
    except ValidationError as exc:
        raise BadResponseError(f"list body rejected ({_describe(exc)})") from None
    return InvocationPage(
        invocations=tuple(good), nextToken=token.next_token, skipped=len(items) - len(good)
    )


SortOrder = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Every query parameter of ListStatefulAsyncInvocations / ListAsyncTasks."""

    id_prefix: str | None = None
    status: str | None = None
    started_time_begin_ms: int | None = None
    started_time_end_ms: int | None = None
    sort_order_by_time: SortOrder | None = None
    limit: int | None = None
    include_payload: bool | None = None

    def query(self, api: Api) -> dict[str, str]:
        """The query parameters for this filter, named as ``api`` names them."""
        params: dict[str, str] = {}
        if self.id_prefix is not None:
            params["invocationIdPrefix" if api is Api.FC2 else "prefix"] = self.id_prefix
        if self.status is not None:
            params["status"] = self.status
        if self.started_time_begin_ms is not None:
            params["startedTimeBegin"] = str(self.started_time_begin_ms)
        if self.started_time_end_ms is not None:
            params["startedTimeEnd"] = str(self.started_time_end_ms)
        if self.sort_order_by_time is not None:
            params["sortOrderByTime"] = self.sort_order_by_time
        if self.limit is not None:
            params["limit"] = str(self.limit)
        if self.include_payload is not None:
            params["includePayload"] = "true" if self.include_payload else "false"
        return params
