"""Delays, as pure functions: backoff with full jitter, adaptive intervals, jittered intervals.

The random source is a parameter, so tests pass a seeded one and get exact numbers.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> float:
    """Delay before retry ``attempt`` (1-based): full jitter over ``base * 2**(attempt-1)``.

    Full jitter (uniform in [0, ceiling]) spreads a herd of retries best. A server's
    ``Retry-After`` is a floor: never come back sooner than asked, but never past ``cap_s``
    unless the server asked for longer.
    """
    ceiling = min(cap_s, base_s * (2 ** min(max(attempt, 1) - 1, 62)))
    delay = rng.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def jittered_s(interval_s: float, jitter: float, rng: random.Random) -> float:
    """``interval_s`` scaled by a random factor in [1 - jitter, 1 + jitter]."""
    return interval_s * rng.uniform(1 - jitter, 1 + jitter)


def adapt_interval_s(
    current_s: float, *, changed: bool, interval_s: float, max_interval_s: float
) -> float:
    """The next base interval: back to ``interval_s`` on change, else 1.5x up to the ceiling.

    A task that runs for hours without change costs ever fewer polls; the first change brings
    polling back to full speed.
    """
    if changed:
        return interval_s
    return min(max_interval_s, max(interval_s, current_s * 1.5))


def retry_after_s(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """The server's requested delay: ``Retry-After`` (seconds or HTTP date) or
    ``x-acs-retry-after`` (milliseconds, as the tea SDK's retry policy reads it)."""
    raw = headers.get("Retry-After")
    if raw:
        raw = raw.strip()
        if raw.isdigit():
            return float(raw)
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))
    acs = headers.get("x-acs-retry-after")
    if acs and acs.strip().isdigit() and int(acs) > 0:
        return int(acs) / 1000.0
    return None
