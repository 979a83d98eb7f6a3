"""The ``migrate-state`` command: copy a single host's SQLite state into PostgreSQL.

The target is the config's ``state.url`` (and ``state.password``); the source is the
SQLite file given with ``--from``, read while holding its lock, so the daemon that used it must
be stopped. A second run copies nothing and says "0 new rows". This module must not turn
exceptions into exit codes or messages: ``watcher.cli.main`` alone does that.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.cli_exits import EXIT_OK, UsageError

if TYPE_CHECKING:
    from watcher.store.postgres.from_sqlite import CopyReport


def render_report(report: CopyReport) -> str:
    """What was copied, table by table, and the total of new rows."""
    width = max(len(label) for label in report.read)
    lines = [f"copied {report.source} into {report.target}:"]
    for label, read in report.read.items():
        new = report.new[label]
        line = f"  {label:<{width}}  {new:>7} new of {read}"
        if label == "outbox" and report.new_outbox:
            states = ", ".join(f"{n} {state}" for state, n in sorted(report.new_outbox.items()))
            line += f" ({states})"
        lines.append(line)
    total = report.total_new
    if total:
        lines.append(f"{total} new row{'' if total == 1 else 's'}")
    else:
        lines.append("0 new rows: everything was there already")
    return "\n".join(lines)


def _cmd_migrate_state(args: argparse.Namespace) -> int:
    from watcher.config.load import load_config
    from watcher.store.postgres.from_sqlite import copy_from_sqlite
    from watcher.store.postgres.settings import postgres_target

    loaded = load_config(Path(args.config))
    target = postgres_target(loaded.config.state)
    if target is None:
        raise UsageError(
            f"{args.config} sets no state.url: migrate-state copies into the PostgreSQL "
            "database it names (state.url: postgresql://user@host:5432/db)"
        )
    url, password = target
    report = asyncio.run(copy_from_sqlite(Path(args.source), url, password=password))
    print(render_report(report))
    return EXIT_OK


def add_migrate_state(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare ``migrate-state``."""
    command = commands.add_parser(
        "migrate-state",
        help="copy a single host's SQLite state into the PostgreSQL database of state.url",
        parents=[common],
    )
    command.set_defaults(handler=_cmd_migrate_state)
    command.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the watcher's YAML config"
    )
    command.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="PATH",
        help="the SQLite state DB to copy (its daemon stopped)",
    )
