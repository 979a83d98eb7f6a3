"""Loading the config: YAML read, substituted, validated once into one frozen tree.

``load_config`` reads the file, substitutes ``${VAR}`` / ``${VAR:-default}`` in string values
(after parsing, so a variable can never change the YAML's structure), validates with pydantic,
and reads ``invocations_file`` lists. Every problem is collected and raised together in a
``ConfigError`` whose lines name the YAML path and line. This module does not touch the network
or the state DB.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError

from watcher.config.delivery import SINK_TYPES
from watcher.config.ids_file import (
    Candidate,
    expand,
    ids_file_path,
    inline_candidates,
    parse_ids,
)
from watcher.config.models import Config, LoadedConfig, Tracked, WatchEntry
from watcher.config.yaml_source import (
    inline_secrets,
    line_index,
    render_location,
    resolve_files,
    substitute,
)


class ConfigError(Exception):
    """The config cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def _pydantic_problems(exc: ValidationError, lines: dict[tuple[Any, ...], int]) -> list[str]:
    problems = []
    for error in exc.errors():
        # pydantic adds tagged-union and validator names to loc; keep the YAML path only.
        loc = tuple(error["loc"])
        if len(loc) > 2 and loc[0] == "sinks" and loc[2] in SINK_TYPES:
            loc = loc[:2] + loc[3:]  # pydantic names the union member; the YAML does not
        line = None
        for depth in range(len(loc), -1, -1):
            line = lines.get(loc[:depth])
            if line is not None:
                break
        message = error["msg"].removeprefix("Value error, ")
        where = render_location(loc)
        problems.append(f"{where}: {message}" + (f" (line {line})" if line else ""))
    return problems


def _read_ids_file(path: Path, where: str, problems: list[str]) -> list[str]:
    try:
        # utf-8-sig: editors on Windows start files with a BOM, which is not part of an id
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        problems.append(f"{where}: cannot read {path} ({exc.strerror})")
        return []
    except UnicodeDecodeError:
        problems.append(f"{where}: {path} is not UTF-8 text")
        return []
    good, bad = parse_ids(text)
    problems.extend(f"{where}: {path}:{number}: {error}" for number, error in bad)
    return [value for _, value in good]


def _expand(config: Config, base_dir: Path, problems: list[str]) -> tuple[Tracked, ...]:
    # Strict, unlike the live re-read: any problem here fails the config.
    def candidates_for(index: int, entry: WatchEntry) -> list[Candidate]:
        found = inline_candidates(index, entry)
        path = ids_file_path(entry, base_dir)
        if path is not None:
            where = f"watch[{index}].invocations_file"
            found += [
                Candidate(value, where, where) for value in _read_ids_file(path, where, problems)
            ]
        return found

    def report(candidate: Candidate, error: str) -> None:
        problems.append(f"{candidate.where}: {error}")

    return expand(config, candidates_for, report)


def _check_sinks(config: Config, problems: list[str]) -> None:
    seen: set[str] = set()
    for index, sink in enumerate(config.sinks):
        if sink.name in seen:
            problems.append(f"sinks[{index}].name: {sink.name!r} is used by another sink")
        seen.add(sink.name)
    for index, route in enumerate(config.routes):
        for position, name in enumerate(route.sinks):
            if name not in seen:
                problems.append(
                    f"routes[{index}].sinks[{position}]: no sink is named {name!r} "
                    f"(sinks: {', '.join(sorted(seen))})"
                )


def load_config(path: Path, env: dict[str, str] | None = None) -> LoadedConfig:
    """Read, substitute, validate and expand a config file, or raise ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM is not YAML
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, ["the file is not UTF-8 text"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "unparseable"
        raise ConfigError(path, [f"not valid YAML: {problem}{where}"]) from None
    if not isinstance(document, dict):
        raise ConfigError(path, ["the top level must be a mapping with fc, state and watch"])
    lines = dict(line_index(node)) if node is not None else {}
    problems: list[str] = []
    environment = dict(os.environ) if env is None else env
    literal_secrets = inline_secrets(document)
    document = substitute(document, "", environment, problems)
    document = resolve_files(document, "", path.parent, environment, problems)
    if problems:
        raise ConfigError(path, problems)
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(path, _pydantic_problems(exc, lines)) from None
    tracked = _expand(config, path.parent, problems)
    _check_sinks(config, problems)
    if problems:
        raise ConfigError(path, problems)
    return LoadedConfig(
        config=config, path=path, tracked=tracked, inline_secrets=tuple(literal_secrets)
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for editors."""
    schema = Config.model_json_schema()
    schema["title"] = "fc-watcher configuration"
    return schema


_log = structlog.get_logger("watcher.config")


def warn_if_secrets_exposed(loaded: LoadedConfig) -> None:
    """A config holding inline secrets must not be readable by other users."""
    if not loaded.inline_secrets:
        return
    try:
        mode = loaded.path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        _log.warning(
            "config_readable_by_others",
            config=str(loaded.path),
            secrets=list(loaded.inline_secrets),
            fix=f"chmod 600 {loaded.path}, or move the secrets to ${{VAR}} or *_file "
            "(systemd LoadCredential=)",
        )
