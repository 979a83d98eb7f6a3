"""The replicas benchmark's report as Markdown: a row a run, then the takeover times."""

from __future__ import annotations

import statistics

from watcher.devtools.bench.measure import Params
from watcher.devtools.bench.replicas_setup import percentile


def _row(run: Params) -> str:
    cpu = " / ".join(f"{c:.0%}" for c in run["cpu_share_per_replica"])
    slots = " / ".join(str(n) for n in run.get("slots_per_replica", [])) or "-"
    gets = " / ".join(f"{g:,}" for g in run["gets_per_replica"])
    return (
        f"| {run['backend']} | {run['replicas']} | {run['gets_per_invocation_per_cycle']:.3f} "
        f"| {run['max_gets_per_id_per_cycle']:.2f} | {run['lists']} | {run['polls_per_s']:,.0f} "
        f"| {run['cpu_us_per_poll']:,.0f} µs | {cpu} | {slots} | {gets} "
        f"| {run['latency_p50_ms']:.0f} / {run['latency_p99_ms']:.0f} ms "
        f"| {run['delivered']} ({run['same_id_redeliveries']} again) |"
    )


def render_replicas(report: Params) -> list[str]:
    """The report as Markdown: a row a run, then the takeover times."""
    s = report["settings"]
    lines = [
        f"{s['invocations']:,} invocations ({s['per_function']} listed ids a function), "
        f"interval_s {s['interval_s']:g}, {s['duration_s']:g} s measured a run, "
        f"{s['changes']} changes; lease_s {s['lease_s']:g}",
        "",
        "| state | replicas | Gets per invocation per cycle | most Gets of one id per cycle "
        "| Lists | polls/s | CPU per poll | CPU share per replica | slots per replica "
        "| Gets per replica | observed -> delivered p50 / p99 | delivered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(run) for run in report["runs"]]
    total = ", ".join(
        f"{sum(r['cpu_share_per_replica']):.0%} ({r['backend']}, {r['replicas']})"
        for r in report["runs"]
    )
    lines.append(
        f"\nCPU of all replicas together, of one core: {total}. They all run on this "
        f"machine's {report.get('cpus', '?')} CPUs, so more replicas add no CPU here (each "
        "tracks every invocation and polls its slots' share); what the runs show is the split."
    )
    for run in report["runs"]:
        if run.get("takeover_s"):
            times = run["takeover_s"]
            lines.append(
                f"\nTakeover after SIGKILL ({len(times)} kills, {run['replicas']} replicas): "
                f"p50 {statistics.median(times):.2f} s, p99 {percentile(times, 0.99):.2f} s, "
                f"max {max(times):.2f} s (target < 2 x lease_s = {2 * s['lease_s']:g} s)"
            )
    return lines
