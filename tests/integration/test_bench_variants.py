"""The benchmark's own contenders, run as the harness runs them (emulator and worker in
processes of their own), on a small load: they measure the daemon's real paths."""

from __future__ import annotations

import pytest

from watcher.devtools.bench.discovery_report import run_discovery
from watcher.devtools.bench.harness import emulator, run_variant
from watcher.devtools.bench.scenario import changing_scenario, steady_scenario

pytestmark = pytest.mark.slow


def test_watcher_variant_polls_unchanged_invocations_without_writing() -> None:
    """The watcher contender polls every steady invocation and its unchanged polls leave the
    state DB untouched, as the README's table claims."""
    with emulator(steady_scenario(50)) as url:
        result = run_variant(
            "watcher", {"url": url, "invocations": 50, "concurrency": 8, "duration_s": 1.0}
        )
    assert result["polls"] > 50
    assert result["unchanged_polls"] > 50
    assert result["db_changed_during_unchanged_polls"] is False
    assert result["cpu_us_per_poll"] > 0


def test_delivery_variant_delivers_every_failure_to_its_webhook() -> None:
    """Every invocation that fails reaches the bench's webhook receiver through the routed
    outbox, once, so the latency figures cover all of them."""
    with emulator(changing_scenario(20, first_change_s=1, spacing_s=0.02)) as url:
        result = run_variant("delivery", {"url": url, "invocations": 20, "duration_s": 20})
    assert result["deliveries"] == result["expected"] == 20
    assert result["p50_ms"] is not None


def test_list_based_watching_costs_fewer_calls_than_a_get_each_and_commits_every_change() -> None:
    """The discovery runs on a small load (500 invocations over 2 functions, 3 cycles of 1 s):
    list-based watching makes fewer FC calls per invocation than one Get each, and every
    change the emulator made in the window is committed; one Get each commits them all too."""
    settings = {
        "invocations": 500,
        "functions": 2,
        "interval_s": 1.0,
        "duration_s": 3.0,
        "scale": 0,
    }
    runs = run_discovery(
        settings, emulator=emulator, run_variant=run_variant, progress=lambda _: None
    )
    listed, each = runs["list"], runs["get"]
    assert listed["changes"] > 0
    assert listed["committed"] == listed["changes"]
    assert each["committed"] == each["changes"]
    assert listed["gets"] < listed["tracked_start"]  # in 3 cycles, not even one Get each
    assert listed["calls_per_invocation_cycle"] < each["calls_per_invocation_cycle"]
    assert listed["requests"] < each["requests"]
