"""The watcher's configuration: YAML validated once, at the edge, into one frozen tree.

``load_config`` reads the file, substitutes ``${VAR}`` / ``${VAR:-default}`` in string values
(after parsing, so a variable can never change the YAML's structure), validates with pydantic,
and reads ``invocations_file`` lists. Every problem is collected and raised together in a
``ConfigError`` whose lines name the YAML path and line. Secrets are ``SecretStr``: they print
as ``**********``. This module does not touch the network or the state DB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from watcher.config.delivery import LogSinkSettings, SinkSettings
from watcher.core.invocation import (
    Api,
    FunctionRef,
    InvalidIdentifierError,
    InvocationRef,
    validate_identifier,
)
from watcher.core.route import Route
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.signing import SignatureScheme


def _number_to_text(value: Any) -> Any:
    # An unquoted account id in YAML is an int; it is still an id, not a number.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


AccountId = Annotated[str, BeforeValidator(_number_to_text), Field(pattern=r"^[0-9]{1,32}$")]


def _identifier(value: str) -> str:
    try:
        return validate_identifier("name or id", value)
    except InvalidIdentifierError as exc:
        raise ValueError(exc) from None


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


class StateBackendError(Exception):
    """A command that reads the SQLite state was pointed at a PostgreSQL one."""


class StateSettings(_Section):
    """Where durable state lives, and for how long finished invocations are kept."""

    path: Path | None = None
    """The SQLite state file (one host)."""
    url: SecretStr | None = None
    """postgresql://user@host:5432/db: the state in PostgreSQL (a secret: it may hold the
    password; ``url_file`` reads it from a file)."""
    password: SecretStr | None = None
    """For a URL without one (else asyncpg reads PGPASSFILE or ~/.pgpass)."""
    retention_days: float = Field(default=30.0, gt=0)
    """Finished invocations unchanged for this long are pruned, with their delivered rows."""
    lease_s: float = Field(default=5.0, ge=0.3, le=600)
    """PostgreSQL only: how long a replica's hold on its slots lasts without a heartbeat
    (it heartbeats every third of it); a dead replica's work moves within twice this."""
    replica_id: str | None = Field(default=None, min_length=1, max_length=200)
    """PostgreSQL only: this replica's name among those sharing the state (hostname-pid)."""

    @model_validator(mode="after")
    def _one_backend(self) -> StateSettings:
        has_url = bool(self.url and self.url.get_secret_value().strip())
        if (self.path is not None) == has_url:
            raise ValueError("give state.path (SQLite, one host) or state.url (PostgreSQL)")
        return self

    def sqlite_path(self) -> Path:
        """The SQLite file, for the commands that read it directly."""
        if self.path is None:
            raise StateBackendError(
                "the state is in PostgreSQL (state.url); this command reads a SQLite state "
                "(state.path) only, so far: run it against the watcher's /metrics or logs"
            )
        return self.path


class PollSettings(_Section):
    """How often and how hard to poll."""

    interval_s: float = Field(10.0, ge=0.05, le=86_400)
    max_interval_s: float = Field(300.0, ge=0.05, le=86_400)
    """Ceiling for the adaptive interval of an invocation that runs long without change."""
    jitter: float = Field(0.1, ge=0, le=1)
    """Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    concurrency: int = Field(64, ge=1, le=10_000)
    api_budget_per_s: float | None = Field(
        None, gt=0, validation_alias=AliasChoices("api_budget_per_s", "rate_limit_per_s")
    )
    """The budget for ALL FC calls, Get and List together, in requests a second (a token
    bucket), to protect the account's API quota. ``rate_limit_per_s`` is its old name."""
    max_tracked: int = Field(200_000, ge=1, le=10_000_000)
    """A cap on the tracked set, to protect memory: at the cap, finished invocations are
    forgotten first, and new ones are turned away (with a log line and a metric), never
    active ones."""
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


class Discover(_Section):
    """Track every invocation of the entry's function that FC lists."""

    prefix: Identifier | None = None
    """Only ids that start with this (``invocationIdPrefix`` / ``prefix``, filtered by FC)."""
    since_s: float = Field(0.0, ge=0, le=7 * 86_400)
    """On the first scan, also track invocations that started this long ago, finished or
    not; with 0 only those still running are (yesterday's failures are not reported)."""
    statuses: list[str] | None = Field(None, min_length=1)
    """Track only invocations first seen in one of these statuses (e.g. only Failed)."""
    overlap_s: float = Field(60.0, ge=0, le=86_400)
    """Each scan looks this far behind its watermark: FC's clock is not ours."""


class WatchEntry(_Section):
    """A group of invocations of one function."""

    api: Api = Api.FC2
    service: Identifier | None = None
    function: Identifier
    qualifier: Identifier | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    invocations: list[Identifier] = Field(default_factory=list)
    invocations_file: Path | None = None
    discover: Discover | None = None
    stuck_after_s: float | None = Field(None, gt=0)
    """Overrides ``poll.stuck_after_s`` for this entry."""
    stuck_repeat_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> WatchEntry:
        if self.api is Api.FC2 and self.service is None:
            raise ValueError("an FC 2.0 entry needs 'service' (or set 'api: fc3')")
        if self.api is Api.FC3 and self.service is not None:
            raise ValueError("an FC 3.0 entry ('api: fc3') has no 'service'")
        if not self.invocations and self.invocations_file is None and self.discover is None:
            raise ValueError("list 'invocations', give an 'invocations_file', or 'discover'")
        return self

    def function_ref(self) -> FunctionRef:
        return FunctionRef(self.api, self.function, self.service, self.qualifier)


class HttpSettings(_Section):
    """The health and metrics endpoint (off unless ``listen`` is set)."""

    listen: str | None = None
    """host:port, e.g. 127.0.0.1:9464."""
    token: SecretStr | None = None
    """Bearer token for the write API (/api/v1/...): off unless this or token_file is set."""
    token_file: Path | None = None
    """A file holding the bearer token (read at start and on reload)."""
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    """Larger API request bodies are refused with 413."""

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
