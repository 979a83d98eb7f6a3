"""The watcher's configuration: YAML validated once, at the edge, into one frozen tree.

``load_config`` reads the file, substitutes ``${VAR}`` / ``${VAR:-default}`` in string values
(after parsing, so a variable can never change the YAML's structure), validates with pydantic,
and reads ``invocations_file`` lists. Every problem is collected and raised together in a
``ConfigError`` whose lines name the YAML path and line. Secrets are ``SecretStr``: they print
as ``**********``. This module does not touch the network or the state DB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from watcher.delivery_config import SINK_TYPES, LogSinkSettings, Route, SinkSettings
from watcher.fc.client import SignatureScheme, resolve_endpoint
from watcher.fc.errors import InvalidIdentifierError
from watcher.fc.models import Api, FunctionRef, InvocationRef, validate_identifier
from watcher.yaml_source import (
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


def _number_to_text(value: Any) -> Any:
    # An unquoted account id in YAML is an int; it is still an id, not a number.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


AccountId = Annotated[str, BeforeValidator(_number_to_text), Field(pattern=r"^[0-9]{1,32}$")]


def _identifier(value: str) -> str:
    try:
        return validate_identifier("name or id", value)
    except InvalidIdentifierError as exc:
        raise ValueError(exc.message) from None


Identifier = Annotated[str, BeforeValidator(_number_to_text), AfterValidator(_identifier)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FcSettings(_Section):
    """How to reach and sign requests to Function Compute."""

    account_id: AccountId
    region: str = Field(pattern=r"^[a-z]{2,}-[a-z0-9-]+$")
    endpoint: str | None = None
    """Overrides the default https://{account_id}.{region}.fc.aliyuncs.com."""
    internal: bool = False
    """Use the {region}-internal endpoint (from inside the region's VPC)."""
    signature: SignatureScheme = SignatureScheme.ACS3
    access_key_id: SecretStr | None = None
    access_key_secret: SecretStr | None = None
    security_token: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_endpoint("0", "x", url=value)  # raises ValueError naming the value
        return value

    @model_validator(mode="after")
    def _keys_together(self) -> FcSettings:
        has_id = bool(self.access_key_id and self.access_key_id.get_secret_value())
        has_secret = bool(self.access_key_secret and self.access_key_secret.get_secret_value())
        if has_id != has_secret:
            raise ValueError(
                "give both access_key_id and access_key_secret, or neither "
                "(to use the default credential chain)"
            )
        token = self.security_token.get_secret_value() if self.security_token else ""
        if token and not has_id:
            raise ValueError("security_token needs access_key_id and access_key_secret")
        return self


class StateSettings(_Section):
    """Where durable state lives."""

    path: Path


class PollSettings(_Section):
    """How often and how hard to poll."""

    interval_s: float = Field(10.0, ge=0.05, le=86_400)
    max_interval_s: float = Field(300.0, ge=0.05, le=86_400)
    """Ceiling for the adaptive interval of an invocation that runs long without change."""
    jitter: float = Field(0.1, ge=0, le=1)
    """Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    concurrency: int = Field(64, ge=1, le=10_000)
    rate_limit_per_s: float | None = Field(None, gt=0)
    """Global cap on FC requests per second (a token bucket), to protect the API quota."""
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_cap_s: float = Field(300.0, gt=0)
    failure_threshold: int = Field(3, ge=1)
    """Consecutive failed polls before ``invocation.poll_failing``."""
    not_found_retries: int = Field(5, ge=1)
    """Not-found answers in a row before ``invocation.not_found``."""
    forget_after_s: float = Field(7 * 86_400, gt=0)
    """Stop polling an invocation that is still not found this long after the first try."""
    stop_timeout_s: float = Field(10.0, gt=0, le=600)
    """On SIGTERM, how long in-flight polls may take to finish and commit."""
    stuck_after_s: float | None = Field(None, gt=0)
    """Report ``invocation.stuck`` for one Enqueued, Dequeued or Running this long."""
    stuck_repeat_s: float | None = Field(None, gt=0)
    """Remind again at this interval while it stays stuck."""

    @model_validator(mode="after")
    def _ordered(self) -> PollSettings:
        if self.max_interval_s < self.interval_s:
            raise ValueError("max_interval_s must be at least interval_s")
        return self


class WatchEntry(_Section):
    """A group of invocations of one function."""

    api: Api = Api.FC2
    service: Identifier | None = None
    function: Identifier
    qualifier: Identifier | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    invocations: list[Identifier] = Field(default_factory=list)
    invocations_file: Path | None = None
    stuck_after_s: float | None = Field(None, gt=0)
    """Overrides ``poll.stuck_after_s`` for this entry."""
    stuck_repeat_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> WatchEntry:
        if self.api is Api.FC2 and self.service is None:
            raise ValueError("an FC 2.0 entry needs 'service' (or set 'api: fc3')")
        if self.api is Api.FC3 and self.service is not None:
            raise ValueError("an FC 3.0 entry ('api: fc3') has no 'service'")
        if not self.invocations and self.invocations_file is None:
            raise ValueError("list 'invocations', or give an 'invocations_file'")
        return self

    def function_ref(self) -> FunctionRef:
        return FunctionRef(self.api, self.function, self.service, self.qualifier)


class HttpSettings(_Section):
    """The health and metrics endpoint (off unless ``listen`` is set)."""

    listen: str | None = None
    """host:port, e.g. 127.0.0.1:9464."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9464)")
        return value

    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class LogSettings(_Section):
    """The process's own logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _default_sinks() -> list[SinkSettings]:
    return [LogSinkSettings(type="log")]


class Config(_Section):
    """The whole, validated configuration."""

    fc: FcSettings
    state: StateSettings
    poll: PollSettings = PollSettings()
    watch: list[WatchEntry] = Field(min_length=1)
    sinks: list[SinkSettings] = Field(default_factory=lambda: _default_sinks(), min_length=1)
    routes: list[Route] = Field(default_factory=list)
    """Checked in order; none at all sends every transition to the log sinks."""
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()


@dataclass(frozen=True, slots=True)
class Tracked:
    """One invocation to watch, with the labels of the entry that named it."""

    ref: InvocationRef
    labels: dict[str, str]
    stuck_after_s: float | None = None
    stuck_repeat_s: float | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus what it expands to."""

    config: Config
    path: Path
    tracked: tuple[Tracked, ...]
    inline_secrets: tuple[str, ...] = ()
    """YAML paths of secrets written in the file itself (worth a permissions check)."""


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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{where}: cannot read {path} ({exc.strerror})")
        return []
    except UnicodeDecodeError:
        problems.append(f"{where}: {path} is not UTF-8 text")
        return []
    ids = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            ids.append((number, line))
    result = []
    for number, value in ids:
        try:
            result.append(validate_identifier("invocation id", value))
        except InvalidIdentifierError as exc:
            problems.append(f"{where}: {path}:{number}: {exc.message}")
    return result


def _expand(config: Config, base_dir: Path, problems: list[str]) -> tuple[Tracked, ...]:
    tracked: dict[str, Tracked] = {}
    origin: dict[str, str] = {}
    for index, entry in enumerate(config.watch):
        where = f"watch[{index}]"
        try:
            function_ref = entry.function_ref()
        except InvalidIdentifierError as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        ids: list[tuple[str, str]] = [
            (f"{where}.invocations[{i}]", value) for i, value in enumerate(entry.invocations)
        ]
        if entry.invocations_file is not None:
            path = entry.invocations_file
            if not path.is_absolute():
                path = base_dir / path
            ids += [
                (f"{where}.invocations_file", value)
                for value in _read_ids_file(path, f"{where}.invocations_file", problems)
            ]
        for id_where, value in ids:
            try:
                ref = InvocationRef(function_ref, value)
            except InvalidIdentifierError as exc:
                problems.append(f"{id_where}: {exc.message}")
                continue
            if ref.key in tracked:
                if origin[ref.key] != id_where:
                    problems.append(
                        f"{id_where}: {value!r} is already tracked by {origin[ref.key]}"
                    )
                continue
            tracked[ref.key] = Tracked(
                ref=ref,
                labels=dict(entry.labels),
                stuck_after_s=entry.stuck_after_s or config.poll.stuck_after_s,
                stuck_repeat_s=entry.stuck_repeat_s or config.poll.stuck_repeat_s,
            )
            origin[ref.key] = id_where
    return tuple(tracked.values())


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
    if not config.routes and not any(sink.type == "log" for sink in config.sinks):
        problems.append(
            "routes: with no routes, transitions go to log sinks only, and there is none; "
            "add a route to your sinks, or a sink of type log"
        )


def load_config(path: Path, env: dict[str, str] | None = None) -> LoadedConfig:
    """Read, substitute, validate and expand a config file, or raise ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
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
