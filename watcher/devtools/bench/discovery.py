"""The discovery benchmark's worker: the real watcher (built by ``build``) watching the
functions of ``scenario.discovery_scenario`` one of two ways, in a process of its own.

- ``list``: a ``discover`` entry per function, run as the daemon runs it (``scheduler.run`` and
  ``discovery.run``), after the first scan (whose first sightings cost a Get each).
- ``get``: the same ids listed in the config, ``scheduler.run`` only, after the first polls:
  a Get each per ``interval_s`` (``max_interval_s`` too: no adaptive interval hides the cost).

It measures ``cycles`` intervals: FC requests (the emulator's count), CPU, RSS, scheduling lag,
scan starts; runs on until the window's changes are committed (or a bound passes); and reads
how long each took, from FC's time of the change (its event's timestamp) to ``observed_ms``.

    python -m watcher.devtools.bench.discovery MODE '{"url": ..., ...}'   (prints one JSON line)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from watcher.config.models import Config, Tracked
from watcher.core.clock import SystemClock
from watcher.core.invocation import InvocationRef
from watcher.daemon.build import Parts, build
from watcher.devtools.bench.discovery_report import (
    Expected,
    delays_ms,
    expected_changes,
    figures,
    function_ref,
    scenario_of,
)
from watcher.devtools.bench.measure import Params, cpu_s
from watcher.devtools.bench.scenario import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    ACCOUNT_ID,
    SERVICE,
    discovery_functions,
    generated,
    generated_ids_by_function,
)
from watcher.engine.discovery import Discovery
from watcher.engine.poll import PollState
from watcher.engine.scan_model import ScanResult
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

Scan = Callable[..., Coroutine[Any, Any, ScanResult]]


@dataclass
class _Probe:
    """What the run records while the window is open: scheduling lag, scan starts."""

    interval_s: float
    recording: bool = False
    samples: dict[str, list[float]] = field(
        default_factory=lambda: {"lags_s": [], "scan_late_s": [], "scan_took_s": []}
    )

    def on_lag(self, lag_s: float) -> None:
        if self.recording:
            self.samples["lags_s"].append(lag_s)

    def time_scans(self, discovery: Discovery) -> None:
        """Wrap each scanner's ``scan`` to see when it starts: a scan is due one interval after
        the previous one started (``Discovery._cycle``), and any later is lag."""
        for scanner in discovery.scanners.values():
            # The instance attribute shadows the method for this run only; the engine has no
            # hook for scan timing, and must not grow one just for the benchmark.
            scanner.scan = self._timed(scanner.scan)  # type: ignore[method-assign]

    def _timed(self, scan: Scan) -> Scan:
        previous_s: list[float] = []

        async def timed(*args: Any, **kwargs: Any) -> ScanResult:  # whatever scan() takes
            started_s = time.monotonic()
            if self.recording and previous_s:
                late_s = started_s - previous_s[0] - self.interval_s
                self.samples["scan_late_s"].append(max(0.0, late_s))
            previous_s[:] = [started_s]
            result = await scan(*args, **kwargs)
            if self.recording:
                self.samples["scan_took_s"].append(time.monotonic() - started_s)
            return result

        return timed


def _config(params: Params, state: Path, ids: dict[str, list[str]]) -> Config:
    interval_s = float(params["interval_s"])
    functions = discovery_functions(int(params["functions"]))
    if params["mode"] == "list":
        # since_s 0: every one is still running at the first scan, so every one is tracked.
        watch = [{"service": SERVICE, "function": f, "discover": {"since_s": 0}} for f in functions]
    else:
        watch = [{"service": SERVICE, "function": f, "invocations": ids[f]} for f in functions]
    return Config.model_validate(
        {
            "fc": {
                "account_id": ACCOUNT_ID,
                "region": "cn-hangzhou",
                "endpoint": params["url"],
                "access_key_id": ACCESS_KEY_ID,
                "access_key_secret": ACCESS_KEY_SECRET,
            },
            "state": {"path": state},
            "poll": {
                "interval_s": interval_s,
                "max_interval_s": interval_s,
                "concurrency": int(params["concurrency"]),
            },
            "watch": watch,
            # A webhook and no routes: alert-worthy changes (Failed, a first Retrying) write
            # their outbox rows in the commit, as the daemon's would; nothing delivers them.
            "sinks": [{"name": "alerts", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        }
    )


def _tracked(params: Params, ids: dict[str, list[str]]) -> list[Tracked]:
    if params["mode"] == "list":
        return []  # discovery finds them
    return [Tracked(InvocationRef(function_ref(f), i), {}) for f in ids for i in ids[f]]


async def _requests(session: aiohttp.ClientSession, url: str) -> tuple[int, int]:
    """FC requests the emulator served so far, and the Gets among them (counted per id)."""
    async with session.get(f"{url}/-/stats") as response:
        stats: dict[str, int] = await response.json()
    gets = sum(n for name, n in stats.items() if name.startswith("requests:"))
    return stats.get("requests", 0), gets


async def _warm_up(mode: str, parts: Parts) -> None:
    if mode == "list":
        await parts.discovery.scan_all()  # the first scan: a Get for each first sighting
    else:
        await parts.scheduler.poll_all()  # every invocation's first poll
        parts.scheduler.spread_first_polls()


async def _drain(states: dict[str, PollState], expected: Expected, timeout_s: float) -> None:
    """Run on until every expected change is committed (the snapshot's event high-water mark
    reaches it), or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    waiting = {key: max(events) for key, events in expected.items()}
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        waiting = {
            key: last
            for key, last in waiting.items()
            if (snapshot := states[key].snapshot) is None or snapshot.event_high_water < last
        }


def _event_rows(state: Path, begin_ms: int) -> list[tuple[str, int, str]]:
    """The event transitions observed from ``begin_ms`` on: (key, observed_ms, data)."""
    # Read straight from the file, after the store closed: only the window's rows, so neither
    # the figures nor the RSS of a 100,000-invocation run grow by loading every transition.
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        return db.execute(
            "SELECT invocation_key, observed_ms, data FROM transitions"
            " WHERE type = 'invocation.event' AND observed_ms >= ?",
            (begin_ms,),
        ).fetchall()


def _rss_mb() -> float | None:  # this process's resident set now (Linux), beside the peak
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize() / 2**20


async def _window(
    params: Params, parts: Parts, session: aiohttp.ClientSession, probe: _Probe
) -> tuple[Params, dict[str, int]]:
    """Measure ``cycles`` intervals of the steady state (the loops keep running); also what was
    watched at its start (key -> started ms), whose changes the window counts."""
    interval_s, cycles = float(params["interval_s"]), int(params["cycles"])
    if params["mode"] == "list":
        # The scan right after the warm-up's catches up on what changed during it (at 100,000,
        # seconds of Gets), and the next may start late behind it: open the window a little
        # before the third, so it holds ``cycles`` steady ones (Gets are even: no such edge).
        await asyncio.sleep(2 * interval_s - min(1.0, interval_s / 4))
    requests_before, gets_before = await _requests(session, params["url"])
    # What is watched now, held in little memory while the RSS is measured: how many are
    # tracked (first in the dict's order: nothing is untracked here), and which are not watched.
    states = parts.scheduler.tracked.states
    tracked = len(states)
    idle = {key for key, state in states.items() if state.done or state.snapshot is None}
    begin_ms, cpu_before, started_s = int(time.time() * 1000), cpu_s(), time.perf_counter()
    probe.recording = True
    await asyncio.sleep(cycles * interval_s)
    probe.recording = False
    elapsed_s, cpu = time.perf_counter() - started_s, cpu_s() - cpu_before
    end_ms = int(time.time() * 1000)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    requests_after, gets_after = await _requests(session, params["url"])
    watched = {
        key: state.snapshot.started_ms
        for key, state in itertools.islice(states.items(), tracked)
        if key not in idle and state.snapshot is not None
    }
    return {
        "begin_ms": begin_ms,
        "end_ms": end_ms,
        "tracked_start": len(watched),
        "tracked_end": parts.scheduler.active_count,
        "cycles": cycles,
        "window_s": elapsed_s,
        "requests": requests_after - requests_before,
        "gets": gets_after - gets_before,
        "cpu_share": cpu / elapsed_s,
        "peak_rss_mb": peak_rss_mb,
        "rss_mb": _rss_mb(),
    }, watched


async def _measure(
    params: Params, parts: Parts, session: aiohttp.ClientSession, probe: _Probe
) -> tuple[Params, Expected]:
    """Warm up, measure the window, then run on until its changes are committed."""
    warm_started_s = time.perf_counter()
    await _warm_up(params["mode"], parts)
    warm_up_s = time.perf_counter() - warm_started_s
    stop = asyncio.Event()
    tasks = [asyncio.create_task(parts.scheduler.run(stop))]
    if params["mode"] == "list":
        probe.time_scans(parts.discovery)
        tasks.append(asyncio.create_task(parts.discovery.run(stop)))
    window, watched = await _window(params, parts, session, probe)
    # Expanded only now: their timelines must not count in the RSS the window measured.
    invocations = generated(scenario_of(params))
    expected = expected_changes(invocations, watched, window["begin_ms"], window["end_ms"])
    del invocations
    states = parts.scheduler.tracked.states
    await _drain(states, expected, timeout_s=2 * float(params["interval_s"]) + 10)
    stop.set()
    await asyncio.gather(*tasks)
    window["warm_up_s"] = warm_up_s
    window["changes"] = sum(len(events) for events in expected.values())
    return window, expected


async def run_discovery_variant(params: Params) -> Params:
    """One variant (``params["mode"]``: ``list`` or ``get``) on a fresh state DB."""
    probe = _Probe(float(params["interval_s"]))
    ids = generated_ids_by_function(scenario_of(params)) if params["mode"] == "get" else {}
    with tempfile.TemporaryDirectory(prefix="fc-watcher-bench-") as scratch:
        state = Path(scratch) / "state.db"
        config = _config(params, state, ids)
        store = await SqliteStore.open(state)
        # As the daemon's: no pool-wide cap, the API limiter bounds the requests.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            parts = await build(
                config,
                _tracked(params, ids),
                store=store,
                session=session,
                clock=SystemClock(),
                rng=random.Random(0),
                metrics=Metrics(),  # the daemon always keeps its Prometheus metrics
                on_lag=probe.on_lag,
            )
            window, expected = await _measure(params, parts, session, probe)
        await store.close()
        delays = delays_ms(_event_rows(state, window["begin_ms"]), expected)
    return {"mode": params["mode"], **figures(window, probe.samples, delays)}


def main() -> None:
    from watcher.daemon.log import configure_logging
    from watcher.daemon.runtime import tune_gc

    configure_logging(level="warning", log_format="json", stream=sys.stderr)
    tune_gc()  # the daemon's interpreter settings
    params = {**json.loads(sys.argv[2]), "mode": sys.argv[1]}
    print(json.dumps(asyncio.run(run_discovery_variant(params))))


if __name__ == "__main__":
    main()
