"""One List, every page of it: oldest first, 100 a page, each call through the API budget.

Paging follows ``nextToken`` to the end. A token may repeat items (inserts between pages) or
skip some (records that left the filter): the scan deduplicates by id and gives a watched
invocation that no page showed a Get of its own, so neither loses nor doubles anything.
"""

from __future__ import annotations

import structlog

from watcher.core.invocation import FunctionRef
from watcher.core.listing import PAGE_LIMIT, Listed
from watcher.engine.limiter import ApiLimiter
from watcher.engine.scan_model import Lister, ScanFailed, ScanResult
from watcher.fc.errors import FcError, outcome_label
from watcher.fc.models import InvocationPage, ListFilter
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.discovery")

_MAX_PAGES = 100_000
"""A bound on one listing (10 million items): a server that never ends its pages is a fault."""


class PagedLister:
    """Lists one function's invocations."""

    def __init__(
        self,
        function_ref: FunctionRef,
        lister: Lister,
        limiter: ApiLimiter,
        metrics: Metrics | None,
    ) -> None:
        self._function_ref = function_ref
        self._lister = lister
        self._limiter = limiter
        self._metrics = metrics
        self._skipping = False

    async def all(self, list_filter: ListFilter, result: ScanResult) -> list[Listed]:
        """Every page of one List, oldest first, through the API budget."""
        query = ListFilter(
            id_prefix=list_filter.id_prefix,
            status=list_filter.status,
            started_time_begin_ms=list_filter.started_time_begin_ms,
            sort_order_by_time="asc",
            limit=PAGE_LIMIT,
        )
        items: list[Listed] = []
        token: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self._one_page(query, token, result)
            items.extend(Listed.of(item) for item in page.invocations)
            if not page.next_token or page.next_token == token:
                return items
            token = page.next_token
        raise ScanFailed(f"List of {self._function_ref} did not end after {_MAX_PAGES} pages")

    async def _one_page(
        self, query: ListFilter, token: str | None, result: ScanResult
    ) -> InvocationPage:
        result.list_calls += 1
        try:
            async with self._limiter:
                page = await self._lister.list_invocations_page(self._function_ref, query, token)
        except FcError as exc:
            self._count("list", outcome_label(exc))
            raise ScanFailed(f"{type(exc).__name__}: {exc}") from None
        self._count("list", "ok")
        result.listed += len(page.invocations)
        if page.skipped and not self._skipping:
            _log.warning(
                "list_items_skipped",
                function=str(self._function_ref),
                skipped=page.skipped,
                hint="FC listed items that are not invocations; the others are watched",
            )
        self._skipping = bool(page.skipped)  # one line per spell of bad items, not per page
        return page

    def _count(self, operation: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.api_requests.labels(operation, outcome).inc()
