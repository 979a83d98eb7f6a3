"""The ``fc-watcher`` command: parse arguments, call into the package, map errors to exit codes.

This is the only place that turns exceptions into exit codes and one-line messages on stderr;
nothing deeper calls ``sys.exit``. A user mistake never ends in a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from watcher import __version__

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
    from watcher.emulator import Emulator, RealClock, load_scenario
    from watcher.log import configure_logging

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from watcher.demo import run_demo

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

    demo = commands.add_parser("demo", help="run the demo against the bundled emulator")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fc-watcher`` console script."""
    from watcher.emulator.scenario import ScenarioError

    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
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
