"""The log throttle: one line per kind per interval, and the next one says how many were held."""

from __future__ import annotations

import pytest

from watcher.core.throttle import Throttle, Window, step

# (window before, now_s, interval_s) -> (window after, what is said: None held, else the count)
STEPS = [
    pytest.param(None, 5.0, 10.0, Window(5.0), 0, id="first-is-let-through"),
    pytest.param(Window(5.0), 5.0, 10.0, Window(5.0, 1), None, id="same-instant-is-held"),
    pytest.param(Window(5.0, 3), 14.9, 10.0, Window(5.0, 4), None, id="inside-interval-held"),
    pytest.param(Window(5.0, 4), 15.0, 10.0, Window(15.0), 4, id="at-interval-says-held"),
    pytest.param(Window(5.0), 99.0, 10.0, Window(99.0), 0, id="after-quiet-says-none-held"),
    pytest.param(Window(5.0, 2), 5.0, 0.0, Window(5.0), 2, id="zero-interval-lets-all-through"),
]


@pytest.mark.parametrize(("window", "now_s", "interval_s", "after", "said"), STEPS)
def test_step(
    window: Window | None, now_s: float, interval_s: float, after: Window, said: int | None
) -> None:
    """Each decision of the pure function, one row of the table."""
    assert step(window, now_s, interval_s) == (after, said)


# A run of (time, kind) occurrences and what the throttle says to each, interval 10 s.
RUNS = [
    pytest.param(
        [(0, "disk_full"), (0.001, "disk_full"), (1, "disk_full"), (9.99, "disk_full")],
        [0, None, None, None],
        id="a-flood-is-one-line",
    ),
    pytest.param(
        [
            (0, "disk_full"),
            (1, "disk_full"),
            (2, "disk_full"),
            (10, "disk_full"),
            (11, "disk_full"),
        ],
        [0, None, None, 2, None],
        id="the-next-line-counts-the-held",
    ),
    pytest.param(
        [(0, "disk_full"), (1, "read_only"), (2, "disk_full"), (3, "read_only")],
        [0, 0, None, None],
        id="kinds-have-their-own-windows",
    ),
    pytest.param(
        [(0, "io_error"), (30, "io_error"), (60, "io_error")],
        [0, 0, 0],
        id="rare-failures-all-said",
    ),
    pytest.param(
        [(0, "x"), *[(t / 10, "x") for t in range(1, 100)], (10, "x"), (20, "x")],
        [0, *[None] * 99, 99, 0],
        id="ten-a-second-for-ten-seconds",
    ),
]


@pytest.mark.parametrize(("hits", "said"), RUNS)
def test_throttle_on_an_injected_clock(
    hits: list[tuple[float, str]], said: list[int | None]
) -> None:
    """A run of occurrences on a clock the test sets: no sleeping, no real time."""
    now = [0.0]
    throttle = Throttle(10.0, lambda: now[0])
    answers = []
    for t, kind in hits:
        now[0] = t
        answers.append(throttle.hit(kind))
    assert answers == said
    assert sum(a is not None for a in answers) <= len({k for _, k in hits}) * (
        1 + int(max(t for t, _ in hits) // 10)
    )
