"""The benchmark's comparisons and report: pure functions over measured figures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.devtools.bench.discovery_report import (
    delays_ms,
    discovery_targets,
    expected_changes,
    figures,
    render_discovery,
)
from watcher.devtools.bench.harness import ratios, relative, render
from watcher.devtools.bench.scenario import SERVICE
from watcher.devtools.emulator.generators import GenInvocation, GenStep


def _m(polls_per_s: float, cpu_us_per_poll: float, **extra: Any) -> dict[str, Any]:
    return {
        "polls_per_s": polls_per_s,
        "cpu_us_per_poll": cpu_us_per_poll,
        "cpu_share": polls_per_s * cpu_us_per_poll / 1e6,
        "peak_rss_mb": 60.0,
        **extra,
    }


RUNS: dict[str, Any] = {
    "cpu": {
        "watcher": _m(
            8000,
            120,
            lag_p50_ms=4.0,
            lag_p99_ms=9.0,
            db_changed_during_unchanged_polls=False,
            unchanged_polls=80_000,
        ),
        "floor": _m(10_000, 96),
        "sdk-async": _m(2000, 480),
        "floor-paced": _m(8000, 100),
    },
    "latency": {
        "watcher": _m(6000, 140),
        "floor": _m(7500, 110),
        "sdk-async": _m(1500, 560),
        "sdk-sync": _m(20, 1300),
    },
    "scale": _m(2001, 220, lag_p50_ms=0.4, lag_p99_ms=1.5),
    "delivery": {"deliveries": 200, "expected": 200, "p50_ms": 2.0, "p99_ms": 9.0},
}


def test_target_ratios_compare_cpu_at_the_same_rate_and_throughput_with_the_sdk() -> None:
    got = ratios(RUNS)
    assert got["cpu_per_poll_vs_floor"] == pytest.approx(1.2)  # paced floor, not 96 µs
    assert got["cpu_per_poll_vs_unpaced_floor"] == pytest.approx(1.25)
    assert got["cpu_per_poll_vs_sdk_async"] == pytest.approx(0.25)
    assert got["throughput_at_latency_vs_sdk_async"] == pytest.approx(4.0)
    assert got["throughput_at_latency_vs_sdk_sync"] == pytest.approx(300.0)


def test_every_variant_is_set_against_the_floor_and_the_sdk() -> None:
    cpu = relative(RUNS["cpu"])
    assert set(cpu) == {"watcher", "floor", "sdk-async", "floor-paced"}
    assert cpu["watcher"]["polls_vs_floor"] == pytest.approx(0.8)
    assert cpu["watcher"]["polls_vs_sdk_async"] == pytest.approx(4.0)
    assert cpu["watcher"]["cpu_vs_floor"] == pytest.approx(1.2)
    assert cpu["sdk-async"]["cpu_vs_sdk_async"] == pytest.approx(1.0)
    latency = relative(RUNS["latency"])  # no paced floor: CPU against the floor itself
    assert latency["watcher"]["cpu_vs_floor"] == pytest.approx(140 / 110)
    assert latency["sdk-sync"]["polls_vs_sdk_async"] == pytest.approx(20 / 1500)


def test_the_report_shows_each_figure_and_ratio() -> None:
    report = {
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
        "params": {
            "invocations": 1000,
            "concurrency": 32,
            "latency_concurrency": 512,
            "latency_ms": 50,
            "duration_s": 10,
        },
        "runs": RUNS,
        "ratios": ratios(RUNS),
        "relative": {name: relative(RUNS[name]) for name in ("cpu", "latency")},
    }
    text = render(report)
    watcher_row = next(line for line in text.splitlines() if line.startswith("cpu  "))
    assert watcher_row.split() == [
        "cpu",
        "watcher",
        "8000",
        "120",
        "96",
        "60",
        "4.0",
        "9.0",
        "0.80",
        "4.00",
        "1.20",
        "0.25",
    ]
    assert "CPU per poll, watcher / floor (same rate): 1.20x" in text
    assert "throughput at 50 ms, watcher / SDK async: 4.0x" in text
    assert "N=1000 invocations, concurrency 32 (50 ms runs: 512), 10 s a variant" in text
    assert "no (80000 unchanged polls)" in text
    assert "p50 2.0 ms, p99 9.0 ms (200/200)" in text
    assert "scale: 2001 polls/s, lag p99 2 ms" in text


# -- the discovery runs -------------------------------------------------------------------------


def _discovery_run(**figures: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "tracked_start": 9_950,
        "tracked_end": 9_350,
        "cycles": 6,
        "requests": 1_500,
        "gets": 600,
        "list_calls": 900,
        "calls_per_invocation_cycle": 0.0260,
        "changes": 600,
        "committed": 600,
        "commit_p50_s": 5.02,
        "commit_p99_s": 9.95,
        "cpu_share": 0.081,
        "peak_rss_mb": 92.4,
        "rss_mb": 90.0,
        "warm_up_s": 6.5,
        "lag_p99_ms": None,
        "scan_late_p99_ms": 3.3,
        "scan_took_p50_ms": 310.0,
        "scan_took_max_ms": 420.0,
    }
    return run | figures


def _discovery_runs(**runs: dict[str, Any]) -> dict[str, Any]:
    settings = {"functions": 10, "interval_s": 10.0, "change_share": 0.01, "duration_s": 60.0}
    settings |= {"invocations": 10_000, "scale": 100_000}
    every = {"settings": settings, **runs}
    every["targets"] = discovery_targets(every)
    return every


def test_expected_changes_are_the_steps_inside_the_window_of_what_was_watched() -> None:
    """FC's time of a step is the emulator's epoch plus at_s; the epoch is read off a first
    sighting's startedTime, and only invocations watched when the window opened count."""
    steps = (GenStep(-100.0, "Enqueued"), GenStep(-100.0, "Running"), GenStep(5.5, "Succeeded"))
    later = (GenStep(-50.0, "Enqueued"), GenStep(-50.0, "Running"), GenStep(30.0, "Retrying"))
    invocations = [_gen("done-000000", steps), _gen("retry-000000", later), _gen("x", steps)]
    epoch_ms = 1_000_000
    watched = {_key("done-000000"): epoch_ms - 100_000, _key("retry-000000"): epoch_ms - 50_000}
    expected = expected_changes(invocations, watched, epoch_ms + 1_000, epoch_ms + 20_000)
    assert expected == {_key("done-000000"): {3: epoch_ms + 5_500}}  # Retrying at 30 s: later


def test_delays_count_only_the_expected_changes_committed() -> None:
    """An event transition is matched to an expected change by invocation, event id and FC's
    timestamp; anything else (first sightings, other events) is not a change of the window."""
    expected = {"k1": {3: 10_000}, "k2": {3: 12_000}}
    rows = [
        ("k1", 14_500, json.dumps({"event": {"eventId": 3, "timestampMs": 10_000}})),
        ("k1", 14_500, json.dumps({"event": {"eventId": 2, "timestampMs": 1_000}})),
        ("k3", 14_000, json.dumps({"event": {"eventId": 3, "timestampMs": 12_000}})),
    ]
    assert delays_ms(rows, expected) == [4_500.0]


def test_figures_divide_calls_by_the_mean_tracked_and_the_cycles() -> None:
    window = {"tracked_start": 1_000, "tracked_end": 900, "cycles": 5, "requests": 95, "gets": 45}
    samples = {"lags_s": [0.001] * 99 + [0.5], "scan_late_s": [], "scan_took_s": [0.2, 0.4]}
    got = figures(window, samples, [float(ms) for ms in range(1, 101)])
    assert got["calls_per_invocation_cycle"] == pytest.approx(95 / 950 / 5)
    assert got["list_calls"] == 50
    assert got["committed"] == 100
    assert got["commit_p50_s"] == pytest.approx(0.051)
    assert got["commit_p99_s"] == pytest.approx(0.1)
    assert got["lag_p99_ms"] == pytest.approx(500.0)
    assert got["scan_late_p99_ms"] is None  # no scans, no figure (not a zero)
    assert got["scan_took_max_ms"] == pytest.approx(400.0)


def test_discovery_targets_hold_each_run_to_its_own() -> None:
    runs = _discovery_runs(
        list=_discovery_run(),
        get=_discovery_run(calls_per_invocation_cycle=1.0, commit_p99_s=12.5),
        scale=_discovery_run(cpu_share=0.62, peak_rss_mb=380.0, lag_p99_ms=2.0),
    )
    assert runs["targets"] == {
        "list": {"commit": True, "calls": True},
        "get": {"commit": False},  # p99 over interval_s + 2 s
        "scale": {"cpu": False, "rss": True, "lag": True},
    }
    missed = _discovery_runs(list=_discovery_run(committed=599))
    assert missed["targets"]["list"]["commit"] is False  # one change never committed


def test_the_discovery_table_shows_each_figure_and_whether_its_target_is_met() -> None:
    runs = _discovery_runs(
        list=_discovery_run(),
        get=_discovery_run(calls_per_invocation_cycle=1.0, lag_p99_ms=1.2, scan_late_p99_ms=None),
        scale=_discovery_run(tracked_start=99_500, cpu_share=0.32, peak_rss_mb=310.0),
    )
    lines = render_discovery(runs)
    # Each row, its label apart, with the columns' spacing folded to one space.
    rows = {line[:22].strip(): " ".join(line[22:].split()) for line in lines[2:5]}
    assert rows["list-based 10,000"] == "9,950 0.0260 yes 5.02 9.95 yes 600/600 8.1 - 92 - -|3.3 -"
    assert rows["one Get each 10,000"] == "9,950 1.0000 - 5.02 9.95 yes 600/600 8.1 - 92 - 1.2|- -"
    assert rows["list-based 100,000"] == (
        "99,500 0.0260 - 5.02 9.95 - 600/600 32.0 yes 310 yes -|3.3 yes"
    )
    assert "FC calls per invocation, list-based / one Get each: 0.026x" in lines
    assert any(line.startswith("list-based 100,000: warm-up 6.5 s; 900 Lists") for line in lines)


def test_a_report_of_the_discovery_runs_alone_renders_without_the_others() -> None:
    report = {
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
        "runs": {"discovery": _discovery_runs(list=_discovery_run())},
    }
    text = render(report)
    assert text.splitlines()[0] == "machine: 2 CPUs, Python 3.11.7, Linux"
    assert "list-based" in text
    assert "CPU per poll" not in text


def _gen(invocation_id: str, timeline: tuple[GenStep, ...]) -> GenInvocation:
    return GenInvocation(
        id=invocation_id,
        api=Api.FC2,
        service=SERVICE,
        function="bench-fn-00" if invocation_id != "x" else "bench-fn-01",
        qualifier="LATEST",
        payload="",
        appears_at_s=timeline[0].at_s,
        timeline=timeline,
    )


def _key(invocation_id: str) -> str:
    return InvocationRef(FunctionRef(Api.FC2, "bench-fn-00", SERVICE), invocation_id).key


def test_the_whole_report_ends_with_the_discovery_runs() -> None:
    report = {
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
        "params": {
            "invocations": 1000,
            "concurrency": 32,
            "latency_concurrency": 512,
            "latency_ms": 50,
            "duration_s": 10,
        },
        "runs": {**RUNS, "discovery": _discovery_runs(list=_discovery_run())},
        "ratios": ratios(RUNS),
        "relative": {name: relative(RUNS[name]) for name in ("cpu", "latency")},
    }
    lines = render(report).splitlines()
    assert any(line.startswith("CPU per poll, watcher / floor") for line in lines)
    assert lines[-1].startswith("list-based 10,000: warm-up 6.5 s")
