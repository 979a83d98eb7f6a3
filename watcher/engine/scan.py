"""List-based watching of one function: discovery and change detection in a few List calls.

Each cycle a function's scan
1. lists its active invocations, one status-filtered List per active status, paged at 100, from
   a little before the oldest one it watches (on a discover entry's first scan: all of them);
2. lists, for each discover entry, what started since the entry's watermark, less an overlap;
3. compares every item with its snapshot on the fields a List item carries: an unchanged one
   costs nothing, a changed or new one gets one Get, through the scheduler's own poll, so it
   is diffed, committed and routed like any other (List items' ``events`` are never trusted);
4. gives each watched invocation that no page showed a Get of its own (it may have changed
   twice, finished, or gone), which also covers items a page token skipped;
5. moves each entry's watermark on once what it found is committed, so a restart neither
   re-reports nor misses an invocation.
Items a token repeats are deduplicated by id. The decisions are ``watcher.core.listing``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from watcher.core.clock import Clock
from watcher.core.invocation import FunctionRef, InvalidIdentifierError, InvocationRef
from watcher.core.listing import (
    ACTIVE_STATUSES,
    Listed,
    estimated_list_calls,
    is_scan_watched,
    list_is_cheaper,
    listed_changed,
    missing,
    next_watermark,
    scan_begin_ms,
    wants_first_sighting,
)
from watcher.core.model import Snapshot
from watcher.engine.limiter import ApiLimiter
from watcher.engine.paging import PagedLister
from watcher.engine.poll import PollOutcome, PollState
from watcher.engine.scan_model import (
    DiscoverSpec,
    Lister,
    ScanResult,
    ScanTarget,
    WatermarkStore,
)
from watcher.fc.models import ListFilter
from watcher.telemetry.metrics import Metrics


@dataclass(slots=True)
class _Findings:
    """Items of one scan, sorted out."""

    seen: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    unchanged: set[str] = field(default_factory=set)
    new: dict[str, tuple[DiscoverSpec, InvocationRef, int]] = field(default_factory=dict)


class FunctionScanner:
    """Scans one function for its discover entries and its watched invocations."""

    def __init__(
        self,
        function_ref: FunctionRef,
        specs: Sequence[DiscoverSpec],
        *,
        lister: Lister,
        limiter: ApiLimiter,
        target: ScanTarget,
        store: WatermarkStore,
        clock: Clock,
        watermarks: Mapping[str, int],
        metrics: Metrics | None = None,
    ) -> None:
        self.function_ref = function_ref
        self.specs = tuple(specs)
        self._pages = PagedLister(function_ref, lister, limiter, metrics)
        self._target = target
        self._store = store
        self._clock = clock
        self.watermarks: dict[str, int | None] = {s.entry: watermarks.get(s.entry) for s in specs}
        self._passed: dict[str, int] = {}
        """Ids seen and not tracked (a ``statuses`` filter, the first-scan rule), by start
        time: decided once, not again on every scan that shows them."""
        self._known: dict[str, Snapshot] = {}
        """Finished invocations of this function from the state DB: not new when seen again."""
        self._key_prefix = InvocationRef(function_ref, "x").key[:-1]
        self.last: ScanResult = ScanResult()
        self.failures = 0
        """Scans in a row whose List calls failed."""

    def attach(self, snapshots: Mapping[str, Snapshot]) -> None:
        """At start (or when a reload adds an entry): track what discovery had found before,
        from the state DB; remember the finished ones, so they are not found again as new."""
        for spec in self.specs:
            items = []
            for key, snapshot in snapshots.items():
                if not key.startswith(self._key_prefix):
                    continue
                ref = InvocationRef(self.function_ref, key[len(self._key_prefix) :])
                if not spec.covers(ref.invocation_id):
                    continue
                if snapshot.status is not None and snapshot.status not in ACTIVE_STATUSES:
                    self._known[key] = snapshot
                else:
                    items.append(spec.tracked(ref))
            self._target.track(spec.source, items, snapshots, spread=False)

    async def scan(self, store: WatermarkStore | None = None) -> ScanResult:
        """One cycle; raises ``ScanFailed`` if a List call failed (nothing is half-applied:
        polls and watermarks move only after every List of the cycle answered). ``store``:
        where this cycle's watermarks go, if not the scanner's own (a replica's fenced one)."""
        result = ScanResult()
        watched = {
            state.ref.key: state
            for state in self._target.function_states(self.function_ref)
            if not state.done and is_scan_watched(state.snapshot)
        }
        if not self.specs and not self._cheaper(len(watched)):
            self._target.set_scanned(self.function_ref, False)
            self.last = result
            return result  # listed ids only, and few: a Get each costs less
        first = {spec.entry for spec in self.specs if self.watermarks[spec.entry] is None}
        now_ms = self._clock.wall_ms()
        active = await self._list_active(watched, bool(first), result)
        fresh = {spec.entry: await self._list_fresh(spec, now_ms, result) for spec in self.specs}
        findings = self._sort_out(active, fresh, first, now_ms)
        lost = missing(watched, findings.seen, findings.changed)
        polled = await self._poll(findings, lost, result)
        await self._target.observe_unchanged(findings.unchanged - findings.changed)
        await self._advance(fresh, findings, polled, first, now_ms, store or self._store)
        # Watched from now on without Gets: only once a whole scan has worked.
        self._target.set_scanned(self.function_ref, True)
        result.changed, result.missing = len(findings.changed), len(lost)
        result.discovered, result.unchanged = len(findings.new), len(findings.unchanged)
        self._forget_passed()
        self.last = result
        return result

    def _cheaper(self, watched: int) -> bool:
        """Listing beats a Get each, by the last scan's calls (or the least a scan needs)."""
        return list_is_cheaper(watched, max(self.last.list_calls, estimated_list_calls(watched)))

    async def _list_active(
        self, watched: Mapping[str, PollState], first: bool, result: ScanResult
    ) -> list[Listed]:
        """The active invocations, one List per active status, in parallel."""
        if not first and not watched:
            return []  # nothing to watch; new ones are found by the scan for new ones
        begin_ms = None
        if not first:
            oldest_ms = min(s.snapshot.started_ms for s in watched.values() if s.snapshot)
            begin_ms = scan_begin_ms(oldest_ms, max((s.overlap_s for s in self.specs), default=60))
        prefix = self._shared_prefix(watched)
        pages = await asyncio.gather(
            *(
                self._pages.all(ListFilter(prefix, status, begin_ms), result)
                for status in ACTIVE_STATUSES
            )
        )
        return [item for page in pages for item in page]

    def _shared_prefix(self, watched: Mapping[str, PollState]) -> str | None:
        """Filter by prefix at the API when one discover entry's prefix covers everything."""
        if len(self.specs) != 1 or self.specs[0].prefix is None:
            return None
        spec = self.specs[0]
        if all(spec.covers(state.ref.invocation_id) for state in watched.values()):
            return spec.prefix
        return None

    async def _list_fresh(
        self, spec: DiscoverSpec, now_ms: int, result: ScanResult
    ) -> list[Listed]:
        """What started since the entry's watermark (less the overlap), whatever its status."""
        watermark_ms = self.watermarks[spec.entry]
        if watermark_ms is None:
            # A first scan looks back at least one overlap too: what finished just before it
            # is then passed over now, and not taken for new by the next scan's overlap.
            begin_ms = now_ms - int(max(spec.since_s, spec.overlap_s) * 1000)
        else:
            begin_ms = scan_begin_ms(watermark_ms, spec.overlap_s)
        return await self._pages.all(ListFilter(spec.prefix, None, begin_ms), result)

    def _sort_out(
        self,
        active: list[Listed],
        fresh: Mapping[str, list[Listed]],
        first: Collection[str],
        now_ms: int,
    ) -> _Findings:
        """Which items changed, which did not, and which are new and wanted."""
        findings = _Findings()
        states = {state.ref.key: state for state in self._target.function_states(self.function_ref)}
        for item in [*active, *(item for items in fresh.values() for item in items)]:
            key = self._key_prefix + item.invocation_id
            state = states.get(key)
            if state is None:
                self._consider_new(item, key, first, now_ms, findings)
                continue
            findings.seen.add(key)
            if listed_changed(state.snapshot, item):
                findings.changed.add(key)
            elif not state.done:
                findings.unchanged.add(key)
        return findings

    def _consider_new(
        self, item: Listed, key: str, first: Collection[str], now_ms: int, found: _Findings
    ) -> None:
        if key in found.new or item.invocation_id in self._passed:
            return
        known = self._known.get(key)
        if known is not None and not listed_changed(known, item):
            return  # finished before, and the same now: not news
        for spec in self.specs:
            if not spec.covers(item.invocation_id):
                continue
            since_ms = now_ms - int(spec.since_s * 1000)
            wanted = wants_first_sighting(
                item, statuses=spec.statuses, first_scan=spec.entry in first, since_ms=since_ms
            )
            if wanted:
                try:
                    ref = InvocationRef(self.function_ref, item.invocation_id)
                except InvalidIdentifierError:
                    return  # a hostile id from the API: never tracked, never a key
                found.new[key] = (spec, ref, item.started_ms)
                return
        self._passed[item.invocation_id] = item.started_ms

    async def _poll(
        self, findings: _Findings, lost: list[str], result: ScanResult
    ) -> dict[str, PollOutcome]:
        """Track the new ones, then one Get for each new, changed or missing invocation."""
        for spec, ref, _ in findings.new.values():
            self._target.track(spec.source, [spec.tracked(ref)], self._known, schedule=False)
        keys = [*findings.new, *findings.changed, *lost]
        result.gets = len(keys)
        return await self._target.poll_now(keys)

    async def _advance(
        self,
        fresh: Mapping[str, list[Listed]],
        findings: _Findings,
        polled: Mapping[str, PollOutcome],
        first: Collection[str],
        now_ms: int,
        store: WatermarkStore,
    ) -> None:
        """Move each entry's watermark past what its scan covered and committed; never past a
        new invocation whose first poll failed (a restart must find it again)."""
        for spec in self.specs:
            current = self.watermarks[spec.entry]
            failed = [
                started_ms
                for key, (found_by, _, started_ms) in findings.new.items()
                if found_by is spec and polled.get(key) not in _COMMITTED
            ]
            if failed:
                moved = max(current or 0, min(failed) - 1) if current is not None else None
            else:
                moved = next_watermark(current, (item.started_ms for item in fresh[spec.entry]))
                if moved is None and spec.entry in first:
                    moved = now_ms  # FC's clock may differ: the next scan's overlap covers it
            if moved is not None and moved != current:
                await store.save_watermark(spec.entry, moved, now_ms)
                self.watermarks[spec.entry] = moved

    def _forget_passed(self) -> None:
        """Ids passed over that no scan window reaches any more need not be remembered."""
        if len(self._passed) < 10_000:
            return
        horizon_ms = min(
            (scan_begin_ms(w, s.overlap_s) for s in self.specs if (w := self.watermarks[s.entry])),
            default=0,
        )
        self._passed = {k: v for k, v in self._passed.items() if v >= horizon_ms}


_COMMITTED = (PollOutcome.CHANGED, PollOutcome.UNCHANGED, PollOutcome.NOT_FOUND)
"""First-poll outcomes whose snapshot is in the state DB (a failed poll's is not)."""
