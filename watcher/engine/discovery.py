"""Discovery and list-based watching for every function: one scanner each, on one cadence.

A function gets a scanner when a watch entry discovers it, or when it has tracked invocations
(listed in the config or tracked live): the scanner itself decides, each cycle, whether
listing is cheaper than a Get each, so the choice stays invisible to the user. Scans run every
``poll.interval_s``; a scan whose List calls fail is retried next cycle, and after
``poll.failure_threshold`` failures in a row its invocations fall back to Gets until a scan
works again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence

import structlog

from watcher.config.models import Config, PollSettings
from watcher.core.clock import Clock
from watcher.core.invocation import FunctionRef
from watcher.core.model import Snapshot
from watcher.engine.bounded import finish_within
from watcher.engine.limiter import ApiLimiter
from watcher.engine.ownership import Fencing
from watcher.engine.scan import FunctionScanner
from watcher.engine.scan_model import DiscoverSpec, Lister, ScanFailed, WatermarkStore
from watcher.engine.scheduler import Scheduler
from watcher.store.errors import FencedError
from watcher.store.records import Fence
from watcher.telemetry.metrics import Metrics

_log = structlog.get_logger("watcher.discovery")


def discover_specs(config: Config) -> dict[FunctionRef, list[DiscoverSpec]]:
    """The config's discover entries, by function."""
    specs: dict[FunctionRef, list[DiscoverSpec]] = {}
    for entry in config.watch:
        if entry.discover is None:
            continue
        function_ref = entry.function_ref()
        discover = entry.discover
        name = "/".join(
            (function_ref.api.value, function_ref.service or "", function_ref.function,
             function_ref.qualifier or "", discover.prefix or "")
        )  # fmt: skip
        specs.setdefault(function_ref, []).append(
            DiscoverSpec(
                entry=name,
                prefix=discover.prefix,
                since_s=discover.since_s,
                statuses=frozenset(discover.statuses) if discover.statuses else None,
                overlap_s=discover.overlap_s,
                labels=dict(entry.labels),
                stuck_after_s=entry.stuck_after_s or config.poll.stuck_after_s,
                stuck_repeat_s=entry.stuck_repeat_s or config.poll.stuck_repeat_s,
            )
        )
    return specs


class Discovery:
    """Owns the scanners, runs them, and rebuilds them on reload."""

    def __init__(
        self,
        *,
        lister: Lister,
        limiter: ApiLimiter,
        scheduler: Scheduler,
        store: WatermarkStore,
        clock: Clock,
        settings: PollSettings,
        rng: random.Random,
        metrics: Metrics | None = None,
        watermarks: Mapping[str, int] | None = None,
        fencing: Fencing | None = None,
    ) -> None:
        self.watermarks: dict[str, int] = dict(watermarks or {})
        """Each discover entry's watermark as loaded from the state DB (scanners keep theirs)."""
        self._lister = lister
        self._limiter = limiter
        self._scheduler = scheduler
        self._store = store
        self._clock = clock
        self._settings = settings
        self._rng = rng
        self._metrics = metrics
        self._fencing = fencing
        self.scanners: dict[FunctionRef, FunctionScanner] = {}
        self._tasks: dict[FunctionRef, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()

    def configure(
        self,
        specs: Mapping[FunctionRef, Sequence[DiscoverSpec]],
        snapshots: Mapping[str, Snapshot],
        settings: PollSettings,
    ) -> None:
        """At start and on reload: a scanner per discovered function (a changed entry's is
        new; an unchanged one's keeps its state), and the entries no longer in the config
        let go of what they tracked."""
        self._settings = settings
        for function_ref, scanner in list(self.scanners.items()):
            wanted = tuple(specs.get(function_ref, ()))
            if scanner.specs == wanted:
                continue
            for spec in scanner.specs:
                if spec not in wanted:
                    owned = self._scheduler.function_states(function_ref)
                    self._scheduler.untrack(spec.source, [s.ref.key for s in owned])
            self._drop(function_ref)
        for function_ref, wanted_specs in specs.items():
            if function_ref not in self.scanners:
                scanner = self._scanner(function_ref, wanted_specs)
                scanner.attach(snapshots)
        self.adopt_listed()

    def adopt_listed(self) -> None:
        """Give each function with tracked invocations a scanner (it lists only if cheaper)."""
        for function_ref in self._scheduler.tracked.functions():
            if function_ref not in self.scanners:
                self._scanner(function_ref, ())

    def _scanner(
        self,
        function_ref: FunctionRef,
        specs: Sequence[DiscoverSpec],
    ) -> FunctionScanner:
        scanner = FunctionScanner(
            function_ref,
            specs,
            lister=self._lister,
            limiter=self._limiter,
            target=self._scheduler,
            store=self._store,
            clock=self._clock,
            watermarks=self.watermarks,
            metrics=self._metrics,
        )
        self.scanners[function_ref] = scanner
        return scanner

    def _drop(self, function_ref: FunctionRef) -> None:
        scanner = self.scanners.pop(function_ref)
        # Kept: an entry that a later reload brings back goes on from where it was.
        self.watermarks.update({k: v for k, v in scanner.watermarks.items() if v is not None})
        task = self._tasks.pop(function_ref, None)
        if task is not None:
            task.cancel()
        self._scheduler.set_scanned(function_ref, False)

    async def scan_all(self) -> None:
        """One scan of every function, now (``fc-watcher once``, tests)."""
        self.adopt_listed()
        for scanner in list(self.scanners.values()):
            await self._scan(scanner)

    def adopt(
        self,
        functions: Sequence[FunctionRef],
        snapshots: Mapping[str, Snapshot],
        watermarks: Mapping[str, int],
    ) -> None:
        """As a replica, these functions' slots came: their scans go on from what the
        database says (the watermarks, what other replicas discovered and committed)."""
        self.watermarks.update(watermarks)
        for function_ref in functions:
            scanner = self.scanners.get(function_ref)
            if scanner is not None:
                stored = {e: watermarks[e] for e in scanner.watermarks if e in watermarks}
                scanner.watermarks.update(stored)
                scanner.attach(snapshots)

    async def _scan(self, scanner: FunctionScanner) -> None:
        fencing, fenced = self._fencing, None
        if fencing is not None:
            fence = fencing.ownership.fence(scanner.function_ref)
            if fence is None:
                return  # another replica's function: that one scans it
            fenced = _FencedWatermarks(fencing, fence)
        try:
            await scanner.scan(fenced)
        except FencedError as exc:
            if fenced is not None:
                _log.info("scan_fenced", function=str(scanner.function_ref), error=str(exc))
                fenced.fencing.ownership.drop(fenced.fence)
            return
        except ScanFailed as exc:
            scanner.failures += 1
            if scanner.failures == 1:  # one line per outage, not one per cycle
                _log.warning("scan_failed", function=str(scanner.function_ref), error=str(exc))
            if scanner.failures >= self._settings.failure_threshold:
                self._scheduler.set_scanned(scanner.function_ref, False)
            self._count("failed")
            return
        if scanner.failures:
            _log.info("scan_recovered", function=str(scanner.function_ref))
        scanner.failures = 0
        self._count("ok")

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.scans.labels(result).inc()

    async def run(self, stop: asyncio.Event) -> None:
        """Scan every function each interval until ``stop``; new functions join as they
        appear (a reload, live tracking)."""
        try:
            while not stop.is_set():
                self.adopt_listed()
                for function_ref, scanner in self.scanners.items():
                    if function_ref not in self._tasks:
                        self._tasks[function_ref] = asyncio.create_task(self._cycle(scanner, stop))
                await _stopped_within(stop, 1.0)
        finally:
            await finish_within(self._tasks.values(), self._settings.stop_timeout_s)
            self._tasks.clear()

    async def _cycle(self, scanner: FunctionScanner, stop: asyncio.Event) -> None:
        # Discovery starts at once; listed ids' scans spread over one interval (no burst).
        delay_s = 0.0 if scanner.specs else self._rng.uniform(0, self._settings.interval_s)
        while not stop.is_set():
            if delay_s > 0 and await _stopped_within(stop, delay_s):
                return
            started_s = self._clock.monotonic()
            await self._scan(scanner)
            delay_s = max(0.0, self._settings.interval_s - (self._clock.monotonic() - started_s))

    def list_demand_per_s(self) -> float:
        """FC calls a second the scans spend (their last cycle's Lists and Gets)."""
        interval_s = self._settings.interval_s
        return sum((s.last.list_calls + s.last.gets) / interval_s for s in self.scanners.values())


class _FencedWatermarks:
    """A scan's watermark store as a replica: saved only while its slot is held."""

    def __init__(self, fencing: Fencing, fence: Fence) -> None:
        self.fencing, self.fence = fencing, fence

    async def save_watermark(self, entry: str, started_ms: int, now_ms: int) -> None:
        await self.fencing.store.save_watermark_fenced(self.fence, entry, started_ms, now_ms)


async def _stopped_within(stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``stop`` up to ``timeout_s``; True if it was set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=timeout_s)
    except TimeoutError:
        return False
    return True
