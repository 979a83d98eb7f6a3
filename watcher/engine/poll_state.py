"""What the poller keeps per tracked invocation, and what one poll found: apart from
``watcher.engine.poll`` so the scheduler, scans and ownership share them without the poller."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from watcher.config.models import Tracked
from watcher.core.clock import Since
from watcher.core.invocation import TERMINAL_STATUSES, InvocationRef
from watcher.core.model import Snapshot
from watcher.store.records import Fence


class PollOutcome(StrEnum):
    """What one poll found."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    AUTH_FAILED = "auth_failed"


@dataclass(slots=True)
class PollState:
    """One tracked invocation: what was last seen of it, and where it is in the schedule."""

    ref: InvocationRef
    labels: dict[str, str]
    snapshot: Snapshot | None
    interval_s: float
    stuck_after_s: float | None = None
    stuck_repeat_s: float | None = None
    digest: bytes | None = None
    failures: int = 0
    terminal_polls: int = 0
    done: bool = False
    generation: int = 0
    last_polled_ms: int = 0
    polling: bool = False
    """A poll of it is under way (the scheduler's or a scan's): never two at once."""
    last_error: str = ""
    """Why the last poll failed ("" after a good one): what ``fc-watcher once`` reports."""
    since: Since | None = None
    """When this process first saw the current status's start: its stuck age grows from
    there on the steady clock (in memory only: a restart reads the wall clock again)."""
    fence: Fence | None = None
    """As a replica: the slot's hold this poll's writes need (``watcher.engine.ownership``)."""

    def take_settings(self, item: Tracked) -> None:
        """Tracked again (a reload): its entry's labels and stuck limits apply from now on."""
        self.labels = dict(item.labels)
        self.stuck_after_s, self.stuck_repeat_s = item.stuck_after_s, item.stuck_repeat_s


def is_finished(snapshot: Snapshot | None, terminal_polls: int) -> bool:
    """Terminal, and its final events recorded: nothing more will happen to it.

    FC may log the final event a moment after the status flips, so a terminal status whose last
    event does not show it yet gets one more poll.
    """
    if snapshot is None or snapshot.status is None:
        return False
    if snapshot.status not in TERMINAL_STATUSES:
        return False
    return snapshot.last_event_status == snapshot.status or terminal_polls >= 2
