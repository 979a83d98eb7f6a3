"""Reading a YAML config into plain data, before validation: ``${VAR}`` and ``${VAR:-default}``
substitution in string values, ``<key>_file`` secrets (systemd ``LoadCredential=``), and the
line number of every YAML path so validation errors can point at lines. No validation here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# -- ${VAR} substitution ----------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(value: Any, where: str, env: dict[str, str], problems: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` inside every string of ``value``.

    It runs on parsed data, so a variable's value stays one string and can never add keys.
    A variable that is unset and has no default is a problem naming the YAML path.
    """
    if isinstance(value, dict):
        return {
            k: substitute(v, f"{where}.{k}" if where else str(k), env, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute(v, f"{where}[{i}]", env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{where}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )
        return ""

    return _VARIABLE.sub(replace, value)


# -- secrets from files (systemd LoadCredential=) ------------------------------------------

SECRET_KEYS = frozenset(
    {"access_key_id", "access_key_secret", "security_token", "secret", "url", "token"}
)
_NOT_SECRET_FILES = frozenset({"invocations_file"})


def resolve_files(
    value: Any, where: str, base_dir: Path, env: dict[str, str], problems: list[str]
) -> Any:
    """Replace every ``X_file: PATH`` by ``X: <the file's content>``.

    A relative PATH is looked up in ``$CREDENTIALS_DIRECTORY`` (where systemd puts
    ``LoadCredential=`` files) when set, else next to the config file.
    """
    if isinstance(value, list):
        return [
            resolve_files(v, f"{where}[{i}]", base_dir, env, problems) for i, v in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    resolved: dict[Any, Any] = {}
    for key, item in value.items():
        here = f"{where}.{key}" if where else str(key)
        if not (isinstance(key, str) and key.endswith("_file")) or key in _NOT_SECRET_FILES:
            resolved[key] = resolve_files(item, here, base_dir, env, problems)
            continue
        target = key.removesuffix("_file")
        if target in value:
            problems.append(f"{here}: give {target} or {key}, not both")
            continue
        if not isinstance(item, str):
            problems.append(f"{here}: must be a file path")
            continue
        path = Path(item)
        if not path.is_absolute():
            path = Path(env.get("CREDENTIALS_DIRECTORY") or base_dir) / path
        try:
            resolved[target] = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(f"{here}: cannot read {path} ({exc.strerror})")
    return resolved


def inline_secrets(document: Any, where: str = "") -> list[str]:
    """YAML paths of secrets written into the file itself (not ``${VAR}``, not ``*_file``)."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, item in document.items():
            here = f"{where}.{key}" if where else str(key)
            if key in SECRET_KEYS and isinstance(item, str) and item and "${" not in item:
                if key != "url" or where.startswith("sinks"):
                    found.append(here)
            elif key == "headers" and isinstance(item, dict):
                found.extend(
                    f"{here}.{name}"
                    for name, v in item.items()
                    if isinstance(v, str) and "${" not in v
                )
            else:
                found.extend(inline_secrets(item, here))
    elif isinstance(document, list):
        for index, item in enumerate(document):
            found.extend(inline_secrets(item, f"{where}[{index}]"))
    return found


# -- YAML with line numbers ---------------------------------------------------------------------


def line_index(
    node: yaml.Node, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], int]]:
    """(YAML path, 1-based line) for every node under ``node``."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield from line_index(value_node, (*path, key_node.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from line_index(item, (*path, index))


def render_location(loc: tuple[Any, ...]) -> str:
    """A YAML path as users write it: ``watch[2].invocations[0]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"
