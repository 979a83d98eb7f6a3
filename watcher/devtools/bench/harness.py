"""Runs the benchmark: an emulator process per run, a worker process per variant, one report.

Runs, in one invocation of ``fc-watcher bench``:
  cpu        no added latency: CPU per poll of the watcher, the aiohttp floor, the SDK's async path
  latency    --latency-ms (50 by default) added per request: throughput of the watcher, the
             floor, the SDK async and sync loops, at --latency-concurrency
  scale      20,000 invocations at interval_s 10: polls/s, scheduling lag, RSS
  delivery   change seen by a poll -> webhook receiver has it: p50/p99
  outbox     the outbox after an outage, to a flaky receiver, and steady (``outbox``)
  discovery  list-based watching against one Get each; 100,000 discovered (``discovery_report``)
It orchestrates and reports; the measuring is done in the worker processes (``variants``), and
``ratios``, ``relative`` and ``render`` stay pure so the report can be tested without a run.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from watcher.devtools.bench.discovery_report import render_discovery, run_discovery
from watcher.devtools.bench.measure import free_port
from watcher.devtools.bench.outbox import OUTBOX_RUNS, render_outbox
from watcher.devtools.bench.scenario import changing_scenario, steady_scenario

Params = dict[str, Any]


@contextmanager
def emulator(scenario: dict[str, Any]) -> Iterator[str]:
    """An emulator in its own process on a free loopback port; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        path = Path(scratch) / "scenario.json"
        path.write_text(json.dumps(scenario))  # JSON is YAML
        port = free_port()
        command = [sys.executable, "-m", "watcher", "--log-format", "json", "emulate"]
        command += ["--port", str(port), "--scenario", str(path)]
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the emulator did not start") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()


def run_variant(
    variant: str,
    params: Params,
    module: str = "watcher.devtools.bench.variants",
    timeout_s: int = 600,
) -> Params:
    """One variant in a fresh worker process (``python -m module variant params``)."""
    command = [sys.executable, "-m", module, variant, json.dumps(params)]
    done = subprocess.run(  # noqa: S603 (our own interpreter and module)
        command, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench variant {variant} failed: {done.stderr.strip()[-500:]}")
    result: Params = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def machine() -> Params:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }


def run_all(
    *,
    invocations: int,
    concurrency: int,
    latency_concurrency: int,
    duration_s: float,
    scale: int,
    latency_ms: int = 50,
    discovery: Params | None = None,
    progress: Any = print,
) -> Params:
    """Every run (the discovery runs given their settings); returns the whole report."""
    base = {"invocations": invocations, "concurrency": concurrency, "duration_s": duration_s}
    report: Params = {
        "machine": machine(),
        "params": {**base, "latency_concurrency": latency_concurrency, "latency_ms": latency_ms},
        "runs": {},
    }
    runs = report["runs"]
    runs["cpu"] = _cpu_run(base, progress)
    runs["latency"] = _latency_run(base, latency_ms, latency_concurrency, progress)
    if scale:
        runs["scale"] = _scale_run(scale, progress)
    runs["delivery"] = _delivery_run(progress)
    for mode, params in OUTBOX_RUNS.items():
        progress(f"outbox: {mode} ...")
        runs.setdefault("outbox", {})[mode] = run_variant("outbox", params)
    report["ratios"] = ratios(runs)
    report["relative"] = {name: relative(runs[name]) for name in ("cpu", "latency")}
    if discovery is not None:
        runs["discovery"] = run_discovery_only(discovery, progress)["runs"]["discovery"]
    return report


def run_discovery_only(settings: Params, progress: Any = print) -> Params:
    """The discovery runs alone (``fc-watcher bench --only-discovery``), as a report."""
    runs = run_discovery(settings, emulator=emulator, run_variant=run_variant, progress=progress)
    return {"machine": machine(), "runs": {"discovery": runs}}


def _cpu_run(base: Params, progress: Any) -> Params:
    """No added latency: what each variant costs in CPU per poll."""
    with emulator(steady_scenario(base["invocations"])) as url:
        cpu = {}
        for variant in ("watcher", "floor", "sdk-async"):
            progress(f"cpu: {variant} ...")
            cpu[variant] = run_variant(variant, {**base, "url": url})
        # The floor again, paced to the watcher's rate: CPU per poll at the same rate.
        progress("cpu: floor at the watcher's rate ...")
        cpu["floor-paced"] = run_variant(
            "floor", {**base, "url": url, "rate_per_s": cpu["watcher"]["polls_per_s"]}
        )
    return cpu


def _latency_run(base: Params, latency_ms: int, concurrency: int, progress: Any) -> Params:
    """``latency_ms`` added per request: throughput when the network, not CPU, is the limit."""
    with emulator(steady_scenario(base["invocations"], latency_ms=latency_ms)) as url:
        latency = {}
        for variant in ("watcher", "floor", "sdk-async", "sdk-sync"):
            progress(f"latency {latency_ms} ms: {variant} ...")
            latency[variant] = run_variant(
                variant, {**base, "url": url, "concurrency": concurrency}
            )
    return latency


def _scale_run(scale: int, progress: Any) -> Params:
    """``scale`` invocations at interval_s 10: polls/s, scheduling lag and memory."""
    with emulator(steady_scenario(scale)) as url:
        progress(f"scale: {scale} invocations at interval_s 10 ...")
        params = {"concurrency": 64, "duration_s": 30, "interval_s": 10, "jitter": 0.1}
        return run_variant("watcher", {**params, "url": url, "invocations": scale})


def _delivery_run(progress: Any) -> Params:
    """A change seen by a poll until a webhook receiver has it."""
    with emulator(changing_scenario(200, first_change_s=6, spacing_s=0.02)) as url:
        progress("delivery latency ...")
        return run_variant("delivery", {"url": url, "invocations": 200, "duration_s": 30})


def ratios(runs: Params) -> Params:
    """The comparisons the README table quotes: the watcher's rows of ``relative``, plus the
    unpaced floor and the SDK's sync loop."""
    cpu = relative(runs["cpu"])["watcher"]
    latency = relative(runs["latency"])["watcher"]
    watcher_cpu_us = runs["cpu"]["watcher"]["cpu_us_per_poll"]
    watcher_polls = runs["latency"]["watcher"]["polls_per_s"]
    return {
        "cpu_per_poll_vs_floor": cpu["cpu_vs_floor"],
        "cpu_per_poll_vs_unpaced_floor": watcher_cpu_us / runs["cpu"]["floor"]["cpu_us_per_poll"],
        "cpu_per_poll_vs_sdk_async": cpu["cpu_vs_sdk_async"],
        "throughput_at_latency_vs_sdk_async": latency["polls_vs_sdk_async"],
        "throughput_at_latency_vs_sdk_sync": watcher_polls
        / runs["latency"]["sdk-sync"]["polls_per_s"],
    }


def relative(run: Params) -> Params:
    """Every variant of a run against the floor and the SDK's async path: polls/s and CPU per
    poll as multiples of theirs. CPU is compared with the paced floor when there is one (the
    same rate), polls/s with the unpaced floor (as fast as it goes)."""
    floor: Params = run["floor"]
    cpu_floor: Params = run.get("floor-paced", floor)
    sdk: Params = run["sdk-async"]
    return {
        variant: {
            "polls_vs_floor": m["polls_per_s"] / floor["polls_per_s"],
            "polls_vs_sdk_async": m["polls_per_s"] / sdk["polls_per_s"],
            "cpu_vs_floor": m["cpu_us_per_poll"] / cpu_floor["cpu_us_per_poll"],
            "cpu_vs_sdk_async": m["cpu_us_per_poll"] / sdk["cpu_us_per_poll"],
        }
        for variant, m in run.items()
    }


def render(report: Params) -> str:
    """The human-readable report (the README's benchmark table is this text)."""
    runs = report["runs"]
    discovery = ["", *render_discovery(runs["discovery"])] if "discovery" in runs else []
    if "cpu" not in runs:  # the discovery runs alone
        return "\n".join([_machine_line(report), *discovery])
    return "\n".join([*_header(report), *_table(report), "", *_summary(report), *discovery])


def _machine_line(report: Params) -> str:
    about = report["machine"]
    return f"machine: {about['cpus']} CPUs, Python {about['python']}, {about['platform']}"


def _header(report: Params) -> list[str]:
    params = report["params"]
    return [
        _machine_line(report),
        f"N={params['invocations']} invocations, concurrency {params['concurrency']} "
        f"({params['latency_ms']} ms runs: {params['latency_concurrency']}), "
        f"{params['duration_s']:g} s a variant",
        "",
        f"{'run':<14}{'variant':<13}{'polls/s':>10}{'CPU us/poll':>13}{'CPU %':>8}"
        f"{'peak RSS MB':>13}{'lag p50 ms':>12}{'lag p99 ms':>12}"
        f"{'polls/s x floor':>17}{'x SDK':>8}{'CPU x floor':>13}{'x SDK':>8}",
    ]


_NAN = float("nan")
# What a row shows where no ratio applies (the scale run, or a report without them).
_NO_RATIOS = dict.fromkeys(
    ("polls_vs_floor", "polls_vs_sdk_async", "cpu_vs_floor", "cpu_vs_sdk_async"), _NAN
)


def _table(report: Params) -> list[str]:
    """One row per variant of the cpu, latency and scale runs, in that order."""
    rows = []
    for run_name in ("cpu", "latency", "scale"):
        run = report["runs"].get(run_name)
        if run is None:
            continue
        variants = run if run_name != "scale" else {"watcher": run}
        for variant, m in variants.items():
            rel = report.get("relative", {}).get(run_name, {}).get(variant, _NO_RATIOS)
            rows.append(_row(run_name, variant, m, rel))
    return rows


def _row(run_name: str, variant: str, m: Params, rel: Params) -> str:
    lag_p50 = m.get("lag_p50_ms", _NAN)
    lag_p99 = m.get("lag_p99_ms", _NAN)
    return (
        f"{run_name:<14}{variant:<13}{m['polls_per_s']:>10.0f}"
        f"{m['cpu_us_per_poll']:>13.0f}{m['cpu_share'] * 100:>8.0f}"
        f"{m['peak_rss_mb']:>13.0f}{lag_p50:>12.1f}{lag_p99:>12.1f}"
        f"{rel['polls_vs_floor']:>17.2f}{rel['polls_vs_sdk_async']:>8.2f}"
        f"{rel['cpu_vs_floor']:>13.2f}{rel['cpu_vs_sdk_async']:>8.2f}"
    )


def _summary(report: Params) -> list[str]:
    """The ratios the README quotes, in sentences, then the scale run in one line."""
    delivery = report["runs"]["delivery"]
    ratio = report["ratios"]
    scale = report["runs"].get("scale")
    unchanged = report["runs"]["cpu"]["watcher"]
    wrote = "yes" if unchanged["db_changed_during_unchanged_polls"] else "no"
    ms = report["params"]["latency_ms"]
    lines = [
        f"CPU per poll, watcher / floor (same rate): {ratio['cpu_per_poll_vs_floor']:.2f}x"
        f"  (unpaced floor: {ratio['cpu_per_poll_vs_unpaced_floor']:.2f}x)",
        f"CPU per poll, watcher / SDK async:        {ratio['cpu_per_poll_vs_sdk_async']:.2f}x",
        f"{f'throughput at {ms} ms, watcher / SDK async:':<42}"
        f"{ratio['throughput_at_latency_vs_sdk_async']:.1f}x",
        f"{f'throughput at {ms} ms, watcher / SDK sync:':<42}"
        f"{ratio['throughput_at_latency_vs_sdk_sync']:.0f}x",
        f"disk written during unchanged polls:      {wrote} "
        f"({unchanged['unchanged_polls']} unchanged polls)",
        f"change seen -> webhook received:          p50 {delivery['p50_ms']:.1f} ms, "
        f"p99 {delivery['p99_ms']:.1f} ms ({delivery['deliveries']}/{delivery['expected']})",
    ]
    if "outbox" in report["runs"]:
        lines += render_outbox(report["runs"]["outbox"])
    if scale:
        lines.append(
            f"scale: {scale['polls_per_s']:.0f} polls/s, lag p99 {scale['lag_p99_ms']:.0f} ms, "
            f"peak RSS {scale['peak_rss_mb']:.0f} MB"
        )
    return lines
