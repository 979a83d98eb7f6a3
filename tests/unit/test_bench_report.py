"""The benchmark's comparisons and report: pure functions over measured figures."""

from __future__ import annotations

from typing import Any

import pytest

from watcher.devtools.bench.harness import ratios, relative, render


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
