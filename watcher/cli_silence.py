"""The ``silence`` commands (add, list, expire): silences, through the state DB, beside a daemon.

Like ``track`` they write to the state DB a running watcher uses (SQLite serialises the
writes; the daemon's lock is not needed), and the watcher applies the change within a second.
Everything is checked before the DB is opened, so a bad matcher or a missing end writes
nothing. This module must not turn exceptions into exit codes or messages: ``watcher.cli.main``
alone does that (an unknown id is an answer, not an exception: it returns 1).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.cli_exits import EXIT_FAILURE, EXIT_OK, UsageError

if TYPE_CHECKING:
    from watcher.config.models import StateSettings
    from watcher.core.silence import Silence, SilenceSpec
    from watcher.store.records import SilenceExpiry

# How the messages of ``watcher.core.silence.check_silence`` name the flags.
_FLAG_NAMES = {
    "starts": "--starts",
    "ends": "--until",
    "duration": "--for",
    "comment": "--comment",
    "author": "--author",
}
_DAY_MS = 86_400_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _user() -> str:
    """Who adds the silence when ``--author`` is not given: the login name, if there is one."""
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError):  # no login name (a container's uid without a passwd entry)
        return "unknown"


def _spec(args: argparse.Namespace, now_ms: int) -> SilenceSpec:
    from watcher.core.silence import SilenceError, check_silence, parse_matchers
    from watcher.daemon.silences import matcher_pairs, parse_window

    try:
        return check_silence(
            match=parse_matchers(matcher_pairs(args.match or [], field="--match")),
            window=parse_window(args.starts, args.until, args.duration, _FLAG_NAMES),
            comment=args.comment,
            author=_user() if args.author is None else args.author,
            now_ms=now_ms,
            names=_FLAG_NAMES,
        )
    except SilenceError as exc:
        raise UsageError(str(exc)) from None


def _state(args: argparse.Namespace) -> StateSettings:
    from watcher.config.load import load_config

    return load_config(Path(args.config)).config.state


async def _add(state: StateSettings, spec: SilenceSpec, now_ms: int) -> Silence:
    from watcher.store.open import open_beside_daemon

    store = await open_beside_daemon(state)
    try:
        return await store.add_silence(spec, now_ms)
    finally:
        await store.close()


async def _listed(state: StateSettings, ended_after_ms: int) -> list[Silence]:
    from watcher.store.open import open_beside_daemon

    store = await open_beside_daemon(state)
    try:
        return await store.list_silences(ended_after_ms=ended_after_ms)
    finally:
        await store.close()


async def _expire(state: StateSettings, silence_id: str, now_ms: int) -> SilenceExpiry:
    from watcher.store.open import open_beside_daemon

    store = await open_beside_daemon(state)
    try:
        return await store.expire_silence(silence_id, now_ms)
    finally:
        await store.close()


def _cmd_add(args: argparse.Namespace) -> int:
    from watcher.core.silence import describe, format_ms

    now_ms = _now_ms()
    spec = _spec(args, now_ms)
    silence = asyncio.run(_add(_state(args), spec, now_ms))
    if args.quiet:
        print(silence.id)
        return EXIT_OK
    starts = "" if silence.starts_ms <= now_ms else f"from {format_ms(silence.starts_ms)} "
    print(
        f"added silence {silence.id}: {describe(silence.match)}, {starts}until "
        f"{format_ms(silence.ends_ms)}, by {silence.author}; a running watcher applies it "
        "within a second"
    )
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from watcher.daemon.silences import RECENT_MS, silence_json, silence_table

    now_ms = _now_ms()
    silences = asyncio.run(_listed(_state(args), now_ms - RECENT_MS if args.all else now_ms))
    if args.json:
        print(json.dumps([silence_json(silence, now_ms) for silence in silences], indent=2))
    elif silences:
        print("\n".join(silence_table(silences, now_ms)))
    else:
        recent = f", or ended in the last {RECENT_MS // 3_600_000} h" if args.all else ""
        print(f"no silences in force or to come{recent}")
    return EXIT_OK


def _cmd_expire(args: argparse.Namespace) -> int:
    from watcher.core.silence import describe, format_ms

    expiry = asyncio.run(_expire(_state(args), args.id, _now_ms()))
    silence = expiry.silence
    if silence is None:
        shown = args.id if len(args.id) <= 40 else args.id[:37] + "..."
        print(
            f"fc-watcher: no silence has id {shown!r}; list them with: fc-watcher silence "
            f"list -c {args.config} --all",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if not expiry.expired:
        print(f"silence {silence.id} had already ended at {format_ms(silence.ended_ms)}; "
              "nothing changed")  # fmt: skip
        return EXIT_OK
    print(
        f"expired silence {silence.id} ({describe(silence.match)}); a running watcher alerts "
        "on what it matched again within a second"
    )
    return EXIT_OK


def add_silence(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Declare ``silence add``, ``silence list`` and ``silence expire``."""
    silence = commands.add_parser(
        "silence", help="hold matching transitions back from the alerting sinks for a while"
    )
    actions = silence.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a silence", parents=[common])
    add.set_defaults(handler=_cmd_add)
    add.add_argument(
        "--match",
        action="append",
        metavar="NAME=VALUE",
        help="what it silences, as the route matchers: type, status, previous_status (A|B for "
        "several), service, function, qualifier (globs), label.KEY; repeatable, all must hold",
    )
    add.add_argument("--for", dest="duration", metavar="DURATION", help="how long: 30m, 2h, 1d")
    add.add_argument("--until", metavar="TIME", help="or when it ends: 2026-12-07T08:00:00Z")
    add.add_argument("--starts", metavar="TIME", help="when it starts (default: now)")
    add.add_argument("--comment", help="why (required)")
    add.add_argument("--author", help="who (default: your user name)")
    add.add_argument("-q", "--quiet", action="store_true", help="print only the new id")
    listing = actions.add_parser("list", help="list silences in force or to come", parents=[common])
    listing.set_defaults(handler=_cmd_list)
    listing.add_argument("--all", action="store_true", help="also those ended in the last 24 h")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    expire = actions.add_parser("expire", help="end a silence now", parents=[common])
    expire.set_defaults(handler=_cmd_expire)
    expire.add_argument("id", metavar="ID", help="the silence's id (see silence list)")
    for command in (add, listing, expire):
        command.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the watcher's YAML config"
        )
