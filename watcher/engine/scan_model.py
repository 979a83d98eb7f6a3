"""What a function's scan works with: its discover entries, what it needs of the FC client,
the scheduler and the store (as protocols), and what one scan did."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from watcher.config.models import Tracked
from watcher.core.invocation import FunctionRef, InvocationRef
from watcher.core.model import Snapshot
from watcher.engine.membership import DISCOVER_PREFIX
from watcher.engine.poll import PollOutcome, PollState
from watcher.fc.models import InvocationPage, ListFilter


@dataclass(frozen=True, slots=True)
class DiscoverSpec:
    """One ``discover`` entry of a function: what it tracks, and how its scan looks back."""

    entry: str
    """A stable name for the entry (its watermark's key)."""
    prefix: str | None = None
    since_s: float = 0.0
    statuses: frozenset[str] | None = None
    overlap_s: float = 60.0
    labels: Mapping[str, str] = field(default_factory=dict)
    stuck_after_s: float | None = None
    stuck_repeat_s: float | None = None

    @property
    def source(self) -> str:
        return DISCOVER_PREFIX + self.entry

    def covers(self, invocation_id: str) -> bool:
        return self.prefix is None or invocation_id.startswith(self.prefix)

    def tracked(self, ref: InvocationRef) -> Tracked:
        return Tracked(ref, dict(self.labels), self.stuck_after_s, self.stuck_repeat_s)


class Lister(Protocol):
    """What a scan needs of the FC client."""

    async def list_invocations_page(
        self,
        function_ref: FunctionRef,
        list_filter: ListFilter | None = None,
        next_token: str | None = None,
    ) -> InvocationPage: ...


class ScanTarget(Protocol):
    """What a scan needs of the scheduler."""

    def function_states(self, function_ref: FunctionRef) -> list[PollState]: ...

    def track(
        self,
        source: str,
        items: Iterable[Tracked],
        snapshots: Mapping[str, Snapshot],
        *,
        spread: bool = True,
        schedule: bool = True,
    ) -> None: ...

    def set_scanned(self, function_ref: FunctionRef, scanned: bool) -> None: ...

    async def poll_now(self, keys: Iterable[str]) -> dict[str, PollOutcome]: ...

    async def observe_unchanged(self, keys: Iterable[str]) -> None: ...


class WatermarkStore(Protocol):
    async def save_watermark(self, entry: str, started_ms: int, now_ms: int) -> None: ...


class ScanFailed(Exception):
    """A List call of the scan failed; the message says which and why (never a secret)."""


@dataclass(slots=True)
class ScanResult:
    """What one scan did: the benchmark and the tests read it."""

    list_calls: int = 0
    listed: int = 0
    changed: int = 0
    discovered: int = 0
    missing: int = 0
    unchanged: int = 0
    gets: int = 0
