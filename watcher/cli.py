"""The ``fc-watcher`` command: parse arguments, call into the package, map errors to exit codes.

This is the only place that turns exceptions into exit codes and one-line messages on stderr;
nothing deeper calls ``sys.exit``. A user mistake never ends in a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from watcher import __version__

if TYPE_CHECKING:
    from watcher.config.models import LoadedConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd's RestartPreventExitStatus uses it
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command-line mistake; the message is the whole explanation."""


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


def _load(args: argparse.Namespace) -> LoadedConfig:
    from watcher.config.load import load_config

    return load_config(Path(args.config))


def _configure_logs(args: argparse.Namespace, loaded: LoadedConfig) -> None:
    from watcher.daemon.log import configure_logging

    settings = loaded.config.log
    log_format = args.log_format if args.log_format != "auto" else settings.format
    configure_logging(level=settings.level, log_format=log_format)


def _cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args)
    config = loaded.config
    print(
        f"{loaded.path}: ok; {len(loaded.tracked)} invocation(s) in {len(config.watch)} "
        f"watch entr{'y' if len(config.watch) == 1 else 'ies'}, sinks: "
        + ", ".join(sink.name for sink in config.sinks)
    )
    return EXIT_OK


def _cmd_schema(_: argparse.Namespace) -> int:
    from watcher.config.load import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _cmd_once(args: argparse.Namespace) -> int:
    from watcher.daemon.service import Watcher
    from watcher.engine.poll import PollOutcome

    loaded = _load(args)
    _configure_logs(args, loaded)

    async def once() -> int:
        watcher = Watcher(loaded)
        await watcher.startup()
        try:
            outcomes = await watcher.run_once()
        finally:
            await watcher.shutdown()
        failed = sum(o in (PollOutcome.FAILED, PollOutcome.AUTH_FAILED) for o in outcomes)
        return EXIT_FAILURE if failed else EXIT_OK

    return asyncio.run(once())


def _cmd_run(args: argparse.Namespace) -> int:
    from watcher.daemon.service import Watcher

    loaded = _load(args)
    _configure_logs(args, loaded)

    async def run() -> int:
        import structlog

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop(signum: int) -> None:
            if stop.is_set() and signum == signal.SIGINT:
                structlog.get_logger().warning("forced_exit", signal="SIGINT")
                os._exit(EXIT_INTERRUPTED)  # a second Ctrl-C: the state DB is safe anyway
            structlog.get_logger().info("stopping", signal=signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, request_stop, signum)
        watcher = Watcher(loaded)
        loop.add_signal_handler(signal.SIGHUP, watcher.request_reload)
        await watcher.startup()
        try:
            await watcher.run_until_stopped(stop)
        finally:
            await watcher.shutdown()
        return EXIT_OK

    return asyncio.run(run())


def _cmd_status(args: argparse.Namespace) -> int:
    from watcher.daemon.status import render_status

    loaded = _load(args)
    print(asyncio.run(render_status(loaded.config.state.path, as_json=args.json)))
    return EXIT_OK


async def _redeliver(path: Path, *, sink: str | None, transition_id: str | None) -> int:
    import time

    from watcher.store.sqlite import SqliteStore

    store = await SqliteStore.open(path, beside_daemon=True)
    try:
        now_ms = int(time.time() * 1000)
        return await store.redeliver(sink=sink, transition_id=transition_id, now_ms=now_ms)
    finally:
        await store.close()


def _cmd_redeliver(args: argparse.Namespace) -> int:
    loaded = _load(args)
    names = {sink.name for sink in loaded.config.sinks}
    if args.sink is not None and args.sink not in names:
        raise UsageError(f"no sink is named {args.sink!r}; sinks: {', '.join(sorted(names))}")
    count = asyncio.run(_redeliver(loaded.config.state.path, sink=args.sink, transition_id=args.id))
    print(f"{count} dead letter(s) queued again; a running watcher sends them within a minute")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib.util

    from watcher.devtools.bench.harness import render, run_all

    if importlib.util.find_spec("alibabacloud_fc_open20210406") is None:
        raise UsageError(
            "the benchmark compares against the official SDK, which is not installed; "
            "run `make bench`, or pip install 'fc-watcher[dev]'"
        )

    report = run_all(
        invocations=args.invocations,
        concurrency=args.concurrency,
        latency_concurrency=args.latency_concurrency,
        duration_s=args.duration_s,
        scale=0 if args.no_scale else args.scale,
        latency_ms=args.latency_ms,
        progress=(lambda _: None) if args.json else (lambda text: print(text, file=sys.stderr)),
    )
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from watcher.devtools.demo import run_demo

    return asyncio.run(run_demo(log_format=args.log_format))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fc-watcher",
        description="Watch Function Compute async invocations and alert on their transitions.",
    )
    parser.add_argument("--version", action="version", version=f"fc-watcher {__version__}")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="console on a terminal, JSON lines otherwise (default: auto)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulate = commands.add_parser("emulate", help="serve the FC emulator on loopback")
    emulate.add_argument("--host", type=_loopback_host, default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=9000)
    emulate.add_argument("--scenario", required=True, help="scenario YAML file")
    emulate.add_argument(
        "--speed", type=float, default=1.0, help="scenario seconds per real second (default 1)"
    )
    emulate.set_defaults(handler=_cmd_emulate)

    for name, handler, text in (
        ("run", _cmd_run, "run the watcher daemon"),
        ("once", _cmd_once, "poll every tracked invocation once, emit, exit (1 if a poll failed)"),
        ("check", _cmd_check, "validate the config: exit 0, or 78 with every problem"),
        ("status", _cmd_status, "show tracked invocations and deliveries from the state DB"),
        ("redeliver", _cmd_redeliver, "queue dead-lettered deliveries again"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the watcher's YAML config"
        )
        command.set_defaults(handler=handler)
        if name == "status":
            command.add_argument("--json", action="store_true", help="print JSON")
        if name == "redeliver":
            command.add_argument("--sink", help="only this sink's dead letters")
            command.add_argument("--id", help="only this transition id")

    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(handler=_cmd_schema)

    bench = commands.add_parser("bench", help="benchmark against the official SDK and aiohttp")
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
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(handler=_cmd_bench)

    demo = commands.add_parser("demo", help="run the demo against the bundled emulator")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fc-watcher`` console script."""
    from watcher.config.load import ConfigError
    from watcher.daemon.runtime import tune_gc
    from watcher.daemon.service import StartupError
    from watcher.devtools.emulator.scenario import ScenarioError
    from watcher.store.errors import StateStoreError

    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    tune_gc()
    try:
        return handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"fc-watcher: {exc.path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except (StateStoreError, StartupError) as exc:
        print(f"fc-watcher: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ScenarioError as exc:
        print(f"fc-watcher: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"fc-watcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"fc-watcher: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
