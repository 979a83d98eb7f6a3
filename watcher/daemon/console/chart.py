"""The overview's chart: transitions per minute by type, as geometry for an inline SVG.

Pure: (minute, type, count) rows in, stacked bars and axes out. The page draws it on the
server, so no chart library and no script. Each type's bars are one SVG path (a vertical
stroke per minute that had any), not an element per bar: 360 minutes of six types would
be thousands of elements, re-sent at every refresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from watcher.core.model import TransitionType

WIDTH, HEIGHT = 960, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24
"""Margins around the plot: room for the count labels on the left and the times below."""
_KNOWN = [kind.value for kind in TransitionType]
_MS_PER_MINUTE = 60_000


@dataclass(frozen=True, slots=True)
class Series:
    """One type's bars, stacked on the types before it."""

    kind: str
    css: str
    """A class from a fixed set (s0..s5, or sx for a type this version does not know)."""
    path: str
    """SVG path data: ``M x bottom V top`` per minute with any."""
    total: int


@dataclass(frozen=True, slots=True)
class Tick:
    """A mark on an axis: where, and its label."""

    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """What the template draws."""

    hours: int
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    bar_width: float
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... at or above ``value``: round axis labels."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _counts(rows: Iterable[tuple[int, str, int]], first: int, minutes: int) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for minute, kind, count in rows:
        if first <= minute < first + minutes:
            counts.setdefault(kind, [0] * minutes)[minute - first] += count
    return counts


def build_chart(rows: Iterable[tuple[int, str, int]], *, now_ms: int, hours: int) -> Chart:
    """The chart of the ``hours`` up to ``now_ms``, a bar a minute, the current minute last."""
    minutes = hours * 60
    first = now_ms // _MS_PER_MINUTE - minutes + 1
    counts = _counts(rows, first, minutes)
    order = sorted(counts, key=lambda kind: (_KNOWN.index(kind) if kind in _KNOWN else 99, kind))
    stacked = [sum(line[i] for line in counts.values()) for i in range(minutes)]
    top = _nice_ceiling(max(stacked, default=1) or 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step_x = plot_w / minutes

    def y(count: int) -> float:
        return TOP + plot_h - count * plot_h / top

    below = [0] * minutes
    series = []
    for kind in order:
        bars = []
        for i, count in enumerate(counts[kind]):
            if count:
                x = LEFT + (i + 0.5) * step_x
                bars.append(f"M{x:.1f} {y(below[i]):.1f}V{y(below[i] + count):.1f}")
                below[i] += count
        css = f"s{_KNOWN.index(kind)}" if kind in _KNOWN else "sx"
        series.append(Series(kind, css, "".join(bars), sum(counts[kind])))
    every = max(1, hours // 6) * 60  # at most about six time labels
    x_ticks = [
        Tick(LEFT + i * step_x, _clock(first + i))
        for i in range(minutes)
        if (first + i) % every == 0
    ]
    values = {0, top} | ({top // 2} if top % 2 == 0 else set())
    y_ticks = [Tick(y(value), str(value)) for value in sorted(values)]
    return Chart(hours, series, x_ticks, y_ticks, bar_width=round(step_x, 2))


def _clock(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M")
