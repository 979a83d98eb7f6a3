"""The discovery benchmark's runs and report: list-based watching against one Get each, and
100,000 discovered invocations on one process.

``run_discovery`` starts an emulator per run (the same scenario for both ways of watching) and
the worker (``discovery``) in a process of its own. The rest is pure, so the report can be
tested without a run: which changes a window should see (``expected_changes``), a run's figures
(``figures``), the targets each run is held to (``discovery_targets``), the table
(``render_discovery``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.devtools.bench.scenario import SERVICE, discovery_scenario
from watcher.devtools.emulator.generators import GenInvocation

Params = dict[str, Any]
Expected = dict[str, dict[int, int]]
"""Per invocation key, the changes of the measured window: event id -> FC's time (epoch ms)."""

WORKER = "watcher.devtools.bench.discovery"

DISCOVERY_DEFAULTS: Params = {
    "invocations": 10_000,
    "functions": 10,
    "interval_s": 10.0,
    "change_share": 0.01,
    "duration_s": 60.0,
    "concurrency": 64,
    "scale": 100_000,
    "scale_concurrency": 256,
}
"""10,000 invocations over 10 functions, 1% changing a 10 s cycle, 6 cycles measured; then
100,000, whose first scan runs 256 Gets at once (no API budget) so it ends in reasonable time."""

CALLS_TARGET = 0.05
COMMIT_SLACK_S = 2.0
CPU_TARGET = 0.5
RSS_TARGET_MB = 400.0
LAG_TARGET_MS = 1000.0

Emulator = Callable[[dict[str, Any]], AbstractContextManager[str]]
RunVariant = Callable[..., Params]


def run_discovery(
    settings: Params, *, emulator: Emulator, run_variant: RunVariant, progress: Any = print
) -> Params:
    """Each way of watching over the same scenario, one after the other, each against a fresh
    emulator (so both see the same invocations change at the same scenario times); then the
    scale run, list-based."""
    s = {**DISCOVERY_DEFAULTS, **settings}
    runs: Params = {"settings": s}
    plan = [(name, s["invocations"], s["concurrency"]) for name in ("list", "get")]
    if s["scale"]:
        plan.append(("scale", s["scale"], s["scale_concurrency"]))
    for name, total, concurrency in plan:
        params = {
            "functions": s["functions"],
            "per_function": total // s["functions"],
            "interval_s": s["interval_s"],
            "change_share": s["change_share"],
            "cycles": max(1, round(s["duration_s"] / s["interval_s"])),
            "concurrency": concurrency,
        }
        progress(f"discovery: {name}, {params['per_function'] * s['functions']} invocations ...")
        with emulator(scenario_of(params)) as url:
            mode = "list" if name == "scale" else name
            runs[name] = run_variant(mode, {**params, "url": url}, module=WORKER, timeout_s=1800)
    runs["targets"] = discovery_targets(runs)
    return runs


def scenario_of(params: Params) -> dict[str, Any]:
    """The emulator scenario of a run's parameters (the worker expands it again)."""
    return discovery_scenario(
        functions=int(params["functions"]),
        per_function=int(params["per_function"]),
        interval_s=float(params["interval_s"]),
        change_share=float(params["change_share"]),
    )


def function_ref(function: str) -> FunctionRef:
    return FunctionRef(Api.FC2, function, SERVICE)


def expected_changes(
    invocations: Iterable[GenInvocation], watched: Mapping[str, int], begin_ms: int, end_ms: int
) -> Expected:
    """The changes FC made in [begin_ms, end_ms] to the invocations ``watched`` (key ->
    the ``startedTime`` of its first sighting) at the window's start.

    The emulator stamps a step at epoch + at_s (``timeline.epoch_at``); its epoch is read off a
    first sighting's ``startedTime``, which is its first step's time."""
    refs: dict[str, FunctionRef] = {}
    epoch_ms: int | None = None
    expected: Expected = {}
    for invocation in invocations:
        ref = refs.setdefault(invocation.function, function_ref(invocation.function))
        key = InvocationRef(ref, invocation.id).key
        started_ms = watched.get(key)
        if started_ms is None:
            continue
        if epoch_ms is None:
            epoch_ms = started_ms - int(invocation.timeline[0].at_s * 1000)
        for event_id, step in enumerate(invocation.timeline, start=1):
            at_ms = epoch_ms + int(step.at_s * 1000)
            if begin_ms <= at_ms <= end_ms:
                expected.setdefault(key, {})[event_id] = at_ms
    return expected


def delays_ms(rows: Iterable[tuple[str, int, str]], expected: Expected) -> list[float]:
    """For each expected change committed (an ``invocation.event`` transition's row: key,
    observed_ms, data), how long after FC's time of the change the watcher observed it."""
    delays = []
    for key, observed_ms, data in rows:
        event = json.loads(data)["event"]
        at_ms = expected.get(key, {}).get(event["eventId"])
        if at_ms is not None and at_ms == event["timestampMs"]:
            delays.append(float(observed_ms - at_ms))
    return delays


def percentile(values: Iterable[float], share: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def figures(window: Params, samples: Mapping[str, list[float]], delays_ms: list[float]) -> Params:
    """A run's report entry: the window's counts, and the percentiles of its samples
    (``lags_s``, ``scan_late_s``, ``scan_took_s``; ``delays_ms`` change -> observed)."""
    tracked = (window["tracked_start"] + window["tracked_end"]) / 2
    lags, late, took = samples["lags_s"], samples["scan_late_s"], samples["scan_took_s"]
    return {
        **window,
        "list_calls": window["requests"] - window["gets"],
        "calls_per_invocation_cycle": (
            window["requests"] / tracked / window["cycles"] if tracked else None
        ),
        "committed": len(delays_ms),
        "commit_p50_s": _scaled(percentile(delays_ms, 0.5), 1e-3),
        "commit_p99_s": _scaled(percentile(delays_ms, 0.99), 1e-3),
        "commit_max_s": _scaled(max(delays_ms, default=None), 1e-3),
        "lag_samples": len(lags),
        "lag_p50_ms": _scaled(percentile(lags, 0.5), 1e3),
        "lag_p99_ms": _scaled(percentile(lags, 0.99), 1e3),
        "scans": len(took),
        "scan_late_p50_ms": _scaled(percentile(late, 0.5), 1e3),
        "scan_late_p99_ms": _scaled(percentile(late, 0.99), 1e3),
        "scan_took_p50_ms": _scaled(percentile(took, 0.5), 1e3),
        "scan_took_max_ms": _scaled(max(took, default=None), 1e3),
    }


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _below(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def _lag_ms(run: Params) -> float | None:
    """The worse of the scheduler's lag and how late scans start (either may have no samples:
    a list run makes few scheduled Gets, a get run no scans)."""
    values = [v for v in (run.get("lag_p99_ms"), run.get("scan_late_p99_ms")) if v is not None]
    return max(values, default=None)


def discovery_targets(runs: Params) -> Params:
    """Per run, each target it is held to: met (True/False), or None with no figure.

    Both 10,000 runs: change -> commit p99 within one interval plus 2 s; list-based also at most
    0.05 FC calls per invocation a cycle (one Get each is the reference, 1.0). The 100,000 run:
    under half a core, under 400 MB peak RSS, lag p99 under 1 s. A change not committed at all
    fails the commit target, whatever the percentiles of the others."""
    commit_limit_s = float(runs["settings"]["interval_s"]) + COMMIT_SLACK_S
    targets: Params = {}
    for name in ("list", "get"):
        run = runs.get(name)
        if run is None:
            continue
        all_in = run["committed"] == run["changes"]
        p99 = _at_most(run["commit_p99_s"], commit_limit_s)
        targets[name] = {"commit": p99 and all_in if p99 is not None else p99}
        if name == "list":
            targets[name]["calls"] = _at_most(run["calls_per_invocation_cycle"], CALLS_TARGET)
    scale = runs.get("scale")
    if scale is not None:
        targets["scale"] = {
            "cpu": _below(scale["cpu_share"], CPU_TARGET),
            "rss": _below(scale["peak_rss_mb"], RSS_TARGET_MB),
            "lag": _below(_lag_ms(scale), LAG_TARGET_MS),
        }
    return targets


def calls_ratio(runs: Params) -> float | None:
    """FC calls per invocation a cycle, list-based against one Get each."""
    listed, each = (runs[n]["calls_per_invocation_cycle"] for n in ("list", "get"))
    return None if listed is None or not each else float(listed) / float(each)


_HEAD = (
    f"{'variant':<22}{'tracked':>9}{'calls/inv/cycle':>17}{'met':>5}"
    f"{'commit p50 s':>14}{'p99 s':>8}{'met':>5}{'committed':>11}"
    f"{'CPU %':>7}{'met':>5}{'peak RSS MB':>13}{'met':>5}{'lag p99 ms sched|scan':>23}{'met':>5}"
)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _met(targets: Params, metric: str) -> str:
    if metric not in targets:
        return "-"  # no target for this figure in this run
    return {True: "yes", False: "NO", None: "?"}[targets[metric]]


def _label(name: str, settings: Params) -> str:
    """The way of watching, and the size of the scenario (the row shows how many were tracked
    when the window opened: a few finished before the first scan)."""
    way = "one Get each" if name == "get" else "list-based"
    return f"{way} {settings['scale' if name == 'scale' else 'invocations']:,}"


def _discovery_row(label: str, run: Params, targets: Params) -> str:
    lag = f"{_num(run['lag_p99_ms'], '.1f')}|{_num(run['scan_late_p99_ms'], '.1f')}"
    return (
        f"{label:<22}{run['tracked_start']:>9,}{_num(run['calls_per_invocation_cycle'], '.4f'):>17}"
        f"{_met(targets, 'calls'):>5}{_num(run['commit_p50_s'], '.2f'):>14}"
        f"{_num(run['commit_p99_s'], '.2f'):>8}{_met(targets, 'commit'):>5}"
        f"{run['committed']:>6}/{run['changes']:<4}{run['cpu_share'] * 100:>7.1f}"
        f"{_met(targets, 'cpu'):>5}{run['peak_rss_mb']:>13.0f}{_met(targets, 'rss'):>5}"
        f"{lag:>23}{_met(targets, 'lag'):>5}"
    )


def render_discovery(runs: Params) -> list[str]:
    """The discovery runs: one row each, then the ratio and the first scans in sentences."""
    s = runs["settings"]
    lines = [
        f"discovery: {s['functions']} functions, {s['change_share']:.0%} of invocations changing "
        f"a {s['interval_s']:g} s cycle, {s['duration_s']:g} s measured after the first scan; "
        f"targets: calls <= {CALLS_TARGET}, commit p99 <= {s['interval_s'] + COMMIT_SLACK_S:g} s,"
        f" CPU < {CPU_TARGET:.0%}, RSS < {RSS_TARGET_MB:g} MB, lag p99 < {LAG_TARGET_MS:g} ms",
        _HEAD,
    ]
    targets = runs.get("targets", {})
    for name in ("list", "get", "scale"):
        if name in runs:
            row = _discovery_row(_label(name, s), runs[name], targets.get(name, {}))
            lines.append(row)
    if "list" in runs and "get" in runs:
        ratio = calls_ratio(runs)
        lines.append(f"FC calls per invocation, list-based / one Get each: {_num(ratio, '.3f')}x")
    for name in ("list", "get", "scale"):
        if name in runs:
            run = runs[name]
            lines.append(
                f"{_label(name, s)}: warm-up {run['warm_up_s']:.1f} s;"
                f" {run['list_calls']} Lists and {run['gets']} Gets in {run['cycles']} cycles;"
                f" scan took p50 {_num(run['scan_took_p50_ms'], '.0f')} ms,"
                f" max {_num(run['scan_took_max_ms'], '.0f')} ms; RSS at the end"
                f" {_num(run['rss_mb'], '.0f')} MB"
            )
    return lines
