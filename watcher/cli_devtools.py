"""The developer-tool sub-commands of ``fc-watcher``: ``emulate``, ``bench`` and ``demo``.

This module declares those sub-commands' arguments and runs them; it must not turn
exceptions into exit codes or messages (``watcher.cli.main`` alone does that), and it
imports the dev tools lazily so the daemon's commands never load them.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watcher.cli_exits import EXIT_OK, UsageError


def _loopback_host(value: str) -> str:
    if value == "localhost":
        return value
    try:
        if ipaddress.ip_address(value).is_loopback:
            return value
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a loopback address; the emulator is a test double and only "
        "listens on 127.0.0.1, ::1 or localhost"
    )


def _cmd_emulate(args: argparse.Namespace) -> int:
    from watcher.daemon.log import configure_logging
    from watcher.devtools.emulator import Emulator, RealClock, load_scenario

    configure_logging(log_format=args.log_format)
    scenario = load_scenario(Path(args.scenario))

    async def serve() -> None:
        import structlog

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        emulator = Emulator(scenario, host=args.host, port=args.port, clock=RealClock(args.speed))
        try:
            await emulator.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                "choose another --port"
            ) from None
        try:
            structlog.get_logger().info(
                "emulator_listening",
                url=emulator.url,
                scenario=args.scenario,
                invocations=len(scenario.invocations),
                faults=len(scenario.faults),
            )
            await stop.wait()
        finally:
            await emulator.stop()

    asyncio.run(serve())
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib.util

    from watcher.devtools.bench.harness import render, run_all, run_discovery_only

    if args.only_replicas:
        return _bench_replicas(args)
    sdk_needed = not args.only_discovery  # the discovery runs compare the watcher with itself
    if sdk_needed and importlib.util.find_spec("alibabacloud_fc_open20210406") is None:
        raise UsageError(
            "the benchmark compares against the official SDK, which is not installed; "
            "run `make bench`, or pip install 'fc-watcher[dev]'"
        )

    progress = (lambda _: None) if args.json else (lambda text: print(text, file=sys.stderr))
    discovery = {
        "invocations": args.discovery_invocations,
        "duration_s": args.discovery_duration_s,
        "scale": args.discovery_scale,
    }
    if args.only_discovery:
        report = run_discovery_only(discovery, progress=progress)
    else:
        report = run_all(
            invocations=args.invocations,
            concurrency=args.concurrency,
            latency_concurrency=args.latency_concurrency,
            duration_s=args.duration_s,
            scale=0 if args.no_scale else args.scale,
            latency_ms=args.latency_ms,
            discovery=None if args.no_discovery else discovery,
            progress=progress,
        )
    if not (args.no_replicas or args.only_discovery):
        from watcher.devtools.bench.replicas import run_replicas

        report["runs"]["replicas"] = run_replicas(progress=progress)
    print(json.dumps(report, indent=2) if args.json else _render_all(report, render))
    return EXIT_OK


def _render_all(report: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> str:
    """The harness's report, then the replicas' table when it ran."""
    from watcher.devtools.bench.replicas_report import render_replicas

    replicas = report["runs"].get("replicas")
    return render(report) + ("\n\n" + "\n".join(render_replicas(replicas)) if replicas else "")


def _bench_replicas(args: argparse.Namespace) -> int:
    """``bench --only-replicas``: 1, 2 and 3 replicas on PostgreSQL beside one on SQLite."""
    from watcher.devtools.bench.replicas import run_replicas
    from watcher.devtools.bench.replicas_report import render_replicas

    progress = (lambda _: None) if args.json else (lambda text: print(text, file=sys.stderr))
    report = run_replicas(progress=progress)
    print(json.dumps(report, indent=2) if args.json else "\n".join(render_replicas(report)))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from watcher.devtools.demo import run_demo

    return asyncio.run(run_demo(log_format=args.log_format))


def add_emulate(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare ``emulate``: serve the FC emulator, never beyond loopback."""
    emulate = commands.add_parser(
        "emulate", help="serve the FC emulator on loopback", parents=[common]
    )
    emulate.add_argument("--host", type=_loopback_host, default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=9000)
    emulate.add_argument("--scenario", required=True, help="scenario YAML file")
    emulate.add_argument(
        "--speed", type=float, default=1.0, help="scenario seconds per real second (default 1)"
    )
    emulate.set_defaults(handler=_cmd_emulate)


def add_bench(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare ``bench``: the comparison with the official SDK and plain aiohttp."""
    bench = commands.add_parser(
        "bench", help="benchmark against the official SDK and aiohttp", parents=[common]
    )
    bench.add_argument("--invocations", type=int, default=1000)
    bench.add_argument("--concurrency", type=int, default=32)
    bench.add_argument(
        "--latency-concurrency",
        type=int,
        default=512,
        help="concurrency of the runs with added latency",
    )
    bench.add_argument(
        "--latency-ms", type=int, default=50, help="latency the emulator adds to each request"
    )
    bench.add_argument("--duration-s", type=float, default=10.0)
    bench.add_argument("--scale", type=int, default=20_000, help="invocations in the scale run")
    bench.add_argument("--no-scale", action="store_true", help="skip the scale run")
    _add_discovery_flags(bench)
    replicas = bench.add_mutually_exclusive_group()
    replicas.add_argument(
        "--no-replicas", action="store_true", help="skip the replicas runs (PostgreSQL)"
    )
    replicas.add_argument(
        "--only-replicas", action="store_true", help="run the replicas runs and nothing else"
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(handler=_cmd_bench)


def _add_discovery_flags(bench: argparse.ArgumentParser) -> None:
    """The discovery runs: list-based watching against a Get each, then ``--discovery-scale``
    invocations discovered on one process."""
    group = bench.add_mutually_exclusive_group()
    group.add_argument("--no-discovery", action="store_true", help="skip the discovery runs")
    group.add_argument(
        "--only-discovery", action="store_true", help="run the discovery runs and nothing else"
    )
    bench.add_argument(
        "--discovery-invocations",
        type=int,
        default=10_000,
        help="invocations over 10 functions, 1%% changing a 10 s cycle (default 10,000)",
    )
    bench.add_argument(
        "--discovery-duration-s",
        type=float,
        default=60.0,
        help="seconds measured after the first scan, in whole 10 s cycles (default 60)",
    )
    bench.add_argument(
        "--discovery-scale",
        type=int,
        default=100_000,
        help="invocations discovered in the CPU/RSS/lag run; 0 skips it (default 100,000)",
    )


def add_demo(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare ``demo``: the watcher against the bundled emulator."""
    demo = commands.add_parser(
        "demo", help="run the demo against the bundled emulator", parents=[common]
    )
    demo.set_defaults(handler=_cmd_demo)
