"""When to poll an invocation again, given what its last poll found. Pure: no I/O, no clock.

The scheduler asks this after every poll. Failures back off (with full jitter, honouring FC's
Retry-After); an authentication outage waits the longest interval; an invocation that is not
found is retried at the base interval until reported, then slowly, and given up after
``forget_after_s``; a finished one is not polled again; anything else adapts its interval to
how often it changes.
"""

from __future__ import annotations

import random

from watcher.config.models import PollSettings
from watcher.core.backoff import adapt_interval_s, backoff_s, jittered_s
from watcher.core.model import Snapshot
from watcher.engine.poll import PollOutcome, PollState, is_finished


def forgotten(snapshot: Snapshot | None, settings: PollSettings, now_ms: int) -> bool:
    """Never found, and first looked for longer ago than ``forget_after_s``."""
    if snapshot is None or snapshot.status is not None or not snapshot.first_not_found_ms:
        return False
    return now_ms - snapshot.first_not_found_ms > settings.forget_after_s * 1000


def next_delay_s(
    state: PollState,
    outcome: PollOutcome,
    retry_after_s: float | None,
    *,
    settings: PollSettings,
    rng: random.Random,
    forgotten_now: bool = False,
) -> float | None:
    """Seconds until the next poll of ``state``, or None when it needs no more polls.

    ``forgotten_now`` is ``forgotten(...)`` for a not-found answer (the caller reads the wall
    clock only then: this runs after every poll). Updates ``state.interval_s`` (the adaptive
    interval) on a successful poll.
    """
    if outcome is PollOutcome.FAILED:
        return backoff_s(
            state.failures,
            base_s=settings.backoff_base_s,
            cap_s=settings.backoff_cap_s,
            rng=rng,
            retry_after_s=retry_after_s,
        )
    if outcome is PollOutcome.AUTH_FAILED:
        return jittered_s(settings.max_interval_s, settings.jitter, rng)
    if outcome is PollOutcome.NOT_FOUND:
        if forgotten_now:
            return None
        reported = state.snapshot is not None and state.snapshot.not_found_reported
        base_s = settings.max_interval_s if reported else settings.interval_s
        return jittered_s(base_s, settings.jitter, rng)
    if is_finished(state.snapshot, state.terminal_polls):
        return None
    state.interval_s = adapt_interval_s(
        state.interval_s,
        changed=outcome is PollOutcome.CHANGED,
        interval_s=settings.interval_s,
        max_interval_s=settings.max_interval_s,
    )
    return jittered_s(state.interval_s, settings.jitter, rng)
