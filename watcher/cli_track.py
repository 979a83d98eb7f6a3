"""The ``track`` and ``untrack`` commands: live ids, through the state DB, beside a daemon.

Like ``redeliver`` they write to the state DB a running watcher uses (SQLite serialises the
writes; the daemon's lock is not needed), and the watcher picks the change up within a second.
Every id is checked before the DB is opened, so one bad id writes nothing. This module must not
turn exceptions into exit codes or messages: ``watcher.cli.main`` alone does that.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.cli_exits import EXIT_OK, UsageError

if TYPE_CHECKING:
    from watcher.config.models import StateSettings
    from watcher.daemon.live import TrackRequest

# How the messages of ``watcher.daemon.live.track_request`` name the flags.
_FLAG_NAMES = {
    "api": "--api",
    "service": "--service",
    "function": "--function",
    "ids": "the ID arguments",
    "labels": "--label",
    "fc3": "--api fc3",
}


def _labels(values: list[str] | None) -> dict[str, str]:
    labels = {}
    for value in values or ():
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise UsageError(f"--label {value!r} is not KEY=VALUE (e.g. --label team=media)")
        labels[name] = text
    return labels


def _request(args: argparse.Namespace) -> TrackRequest:
    from watcher.daemon.live import TrackRequestError, track_request

    try:
        return track_request(
            api=args.api,
            service=args.service,
            function=args.function,
            qualifier=args.qualifier,
            ids=args.ids,
            labels=_labels(getattr(args, "label", None)),
            names=_FLAG_NAMES,
        )
    except TrackRequestError as exc:
        raise UsageError(str(exc)) from None


async def _write(state: StateSettings, request: TrackRequest, *, track: bool) -> int:
    from watcher.store.open import open_beside_daemon

    store = await open_beside_daemon(state)
    try:
        now_ms = int(time.time() * 1000)
        if track:
            return await store.track_live(request.items(), now_ms)
        return await store.untrack_live(request.refs, now_ms)
    finally:
        await store.close()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _cmd_track(args: argparse.Namespace) -> int:
    from watcher.config.load import load_config

    request = _request(args)
    loaded = load_config(Path(args.config))
    new = asyncio.run(_write(loaded.config.state, request, track=True))
    already = len(request.refs) - new
    note = f" ({already} already tracked)" if already else ""
    word = "invocation" if new == 1 else "invocations"
    print(f"tracking {new} new {word} of {request.function_name()}{note}")
    return EXIT_OK


def _cmd_untrack(args: argparse.Namespace) -> int:
    from watcher.config.load import load_config

    request = _request(args)
    loaded = load_config(Path(args.config))
    gone = asyncio.run(_write(loaded.config.state, request, track=False))
    notes = []
    if gone < len(request.refs):
        notes.append(f"{len(request.refs) - gone} not live-tracked")
    # Untracking takes back a registration only: an id the config lists stays polled.
    listed = {item.ref.key for item in loaded.tracked}
    kept = sum(ref.key in listed for ref in request.refs)
    if kept:
        notes.append(f"{kept} still tracked: the config lists {'it' if kept == 1 else 'them'}")
    note = f" ({'; '.join(notes)})" if notes else ""
    print(f"untracked {_plural(gone, 'invocation')} of {request.function_name()}{note}")
    return EXIT_OK


def add_track(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare ``track`` and ``untrack``."""
    for name, handler, text in (
        (
            "track",
            _cmd_track,
            "track invocation ids besides the config's (a running watcher "
            "polls them within a second)",
        ),
        ("untrack", _cmd_untrack, "stop tracking ids added by track"),
    ):
        command = commands.add_parser(name, help=text, parents=[common])
        command.set_defaults(handler=handler)
        command.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the watcher's YAML config"
        )
        command.add_argument(
            "--api", choices=("fc2", "fc3"), default="fc2", help="FC 2.0 (default) or FC 3.0"
        )
        command.add_argument("--service", help="the FC 2.0 service (none with --api fc3)")
        command.add_argument("--function", required=True, help="the function")
        command.add_argument("--qualifier", help="the version or alias, if any")
        if name == "track":
            command.add_argument(
                "--label",
                action="append",
                metavar="KEY=VALUE",
                help="a label the routes can match (repeatable)",
            )
        command.add_argument(
            "ids", nargs="+", metavar="ID", help="invocation ids (FC 2.0) or task ids (FC 3.0)"
        )
