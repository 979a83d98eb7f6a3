"""Parsing what the FC List and Get calls return, and the List call's filters.

The shapes are ``watcher.core.invocation``'s; this module turns response bytes into them, or
into a ``BadResponseError`` (never a guessed status). It does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError

from watcher.core.invocation import Api, Invocation, Text, _Wire
from watcher.fc.errors import BadResponseError


class InvocationPage(_Wire):
    """One page of a List call. ``next_token`` is empty on the last page."""

    invocations: tuple[Invocation, ...] = Field(
        (), validation_alias=AliasChoices("invocations", "tasks")
    )
    next_token: Text = Field("", validation_alias=AliasChoices("nextToken"))


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def parse_invocation(body: bytes) -> Invocation:
    """Parse a Get response body, or raise ``BadResponseError`` (never guess a status)."""
    try:
        return Invocation.model_validate_json(body)
    except ValidationError as exc:
        raise BadResponseError(f"invocation body rejected ({_describe(exc)})") from None


def parse_page(body: bytes) -> InvocationPage:
    """Parse a List response body, or raise ``BadResponseError``."""
    try:
        return InvocationPage.model_validate_json(body)
    except ValidationError as exc:
        raise BadResponseError(f"list body rejected ({_describe(exc)})") from None


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
