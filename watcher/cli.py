"""The ``fc-watcher`` command: parse arguments, call into the package, map errors to exit codes.

This is the only place that turns exceptions into exit codes and one-line messages on stderr;
nothing deeper calls ``sys.exit``. A user mistake never ends in a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher import __version__
from watcher.cli_devtools import add_bench, add_demo, add_emulate
from watcher.cli_exits import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)
from watcher.cli_silence import add_silence
from watcher.cli_state import add_migrate_state
from watcher.cli_track import add_track

if TYPE_CHECKING:
    from watcher.config.models import Config, LoadedConfig, StateSettings

# The exit codes live in cli_exits so the dev-tool commands can share them; they are
# re-exported here because scripts and tests know them as ``watcher.cli.EXIT_*``.
__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "main",
]


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
    print(_routes_table(config))
    if args.probe_sinks is None:
        return EXIT_OK
    from watcher.daemon.probe import probe_lines, probe_sinks

    results = asyncio.run(probe_sinks(config.sinks, connect=args.probe_sinks == "tcp"))
    print("\n".join(probe_lines(results)))
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILURE


def _routes_table(config: Config) -> str:
    """The effective routes, defaults included, as a short aligned table."""
    from watcher.core.route import effective_routes

    log_sinks = [sink.name for sink in config.sinks if sink.type == "log"]
    alert_sinks = [sink.name for sink in config.sinks if sink.type != "log"]
    title = "routes" if config.routes else "routes (none configured: the defaults)"
    rows = [
        ("MATCH", "SINKS", "SEVERITY"),
        *effective_routes(config.routes, log_sinks, alert_sinks),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    lines = [f"  {m:<{widths[0]}}  {s:<{widths[1]}}  {v}" for m, s, v in rows]
    return "\n".join([f"{title}:", *lines])


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
            errors = watcher.scheduler.poll_errors()
        finally:
            await watcher.shutdown()
        failed = sum(o in (PollOutcome.FAILED, PollOutcome.AUTH_FAILED) for o in outcomes)
        if failed:
            # Failed polls are logged at debug only (a daemon retries them); here they are
            # the answer, so say which and why.
            print(f"fc-watcher: {failed} of {len(outcomes)} polls failed:", file=sys.stderr)
            for key, error in sorted(errors.items()):
                print(f"  {key}: {error}", file=sys.stderr)
        return EXIT_FAILURE if failed else EXIT_OK

    return asyncio.run(once())


def _cmd_run(args: argparse.Namespace) -> int:
    from watcher.daemon.service import Watcher

    loaded = _load(args)
    _configure_logs(args, loaded)

    # The service keeps the signal policy (SIGTERM/SIGINT stop, SIGHUP reloads).
    asyncio.run(Watcher(loaded).serve())
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from watcher.daemon.status import DEFAULT_LIMIT, StatusView, load_status_source, write_status

    if args.limit is not None and (args.json or args.limit < 0):
        raise UsageError("--limit takes a count of 0 or more, and not with --json (all rows)")
    from watcher.daemon.replicas_view import postgres_status

    if postgres_status(Path(args.config), sys.stdout, as_json=args.json):
        return EXIT_OK  # the replicas sharing a PostgreSQL state
    source = load_status_source(Path(args.config))
    if source.problems:
        # Status needs only state.path: one bad id must not hide the state of all the others.
        print(
            f"fc-watcher: warning: {args.config} has {source.problems} problem(s) (see "
            "fc-watcher check); showing its state DB, with no invocation marked not tracked",
            file=sys.stderr,
        )
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    view = StatusView(args.json, None if args.all or args.json else limit, source.tracked)
    try:
        write_status(source.state_path, sys.stdout, view)
        sys.stdout.flush()
    except BrokenPipeError:
        # `status --all | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


async def _redeliver(state: StateSettings, *, sink: str | None, transition_id: str | None) -> int:
    import time

    from watcher.store.open import open_beside_daemon

    store = await open_beside_daemon(state)
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
    state = loaded.config.state
    count = asyncio.run(_redeliver(state, sink=args.sink, transition_id=args.id))
    print(f"{count} dead letter(s) queued again; a running watcher sends them within a minute")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fc-watcher",
        description="Watch Function Compute async invocations and alert on their transitions.",
    )
    parser.add_argument("--version", action="version", version=f"fc-watcher {__version__}")
    parser.add_argument("--log-format", default="auto", **_LOG_FORMAT)
    # Accepted after the command too, as people type it; there it overrides the one before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-format", default=argparse.SUPPRESS, **_LOG_FORMAT)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The order of these calls is the order `--help` lists the commands in.
    add_emulate(commands, common)
    _add_config_commands(commands, common)
    add_track(commands, common)
    add_silence(commands, common)
    add_migrate_state(commands, common)
    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(handler=_cmd_schema)
    add_bench(commands, common)
    add_demo(commands, common)
    return parser


_LOG_FORMAT: dict[str, Any] = {
    "choices": ("auto", "json", "console"),
    "help": "console on a terminal, JSON lines otherwise (default: auto)",
}


def _add_config_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare the commands that read the watcher's config: run, once, check, status, redeliver."""
    for name, handler, text in (
        ("run", _cmd_run, "run the watcher daemon"),
        ("once", _cmd_once, "poll every tracked invocation once, emit, exit (1 if a poll failed)"),
        ("check", _cmd_check, "validate the config: exit 0, or 78 with every problem"),
        ("status", _cmd_status, "show tracked invocations and deliveries from the state DB"),
        ("redeliver", _cmd_redeliver, "queue dead-lettered deliveries again"),
    ):
        command = commands.add_parser(name, help=text, parents=[common])
        command.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the watcher's YAML config"
        )
        command.set_defaults(handler=handler)
        if name == "status":
            command.add_argument("--json", action="store_true", help="print every row as JSON")
            rows = command.add_mutually_exclusive_group()
            rows.add_argument("--all", action="store_true", help="print every row")
            rows.add_argument(
                "--limit", type=int, metavar="N", help="print at most N rows (default: 50)"
            )
        if name == "check":
            command.add_argument(
                "--probe-sinks",
                nargs="?",
                const="tcp",
                choices=("dns", "tcp"),
                help="resolve each sink's host and (tcp, the default) connect to it; nothing "
                "is sent; exit 1 if one fails",
            )
        if name == "redeliver":
            command.add_argument("--sink", help="only this sink's dead letters")
            command.add_argument("--id", help="only this transition id")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fc-watcher`` console script."""
    from watcher.config.load import ConfigError
    from watcher.config.models import StateBackendError
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
    except (UsageError, StateBackendError) as exc:
        print(f"fc-watcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"fc-watcher: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
