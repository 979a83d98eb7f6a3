"""Config models for delivery: the sinks (one model per type) and the routes between them.

Part of the config tree validated by ``watcher.config``. Every secret (webhook secrets, robot
tokens, whole robot URLs, which carry their token) is a ``SecretStr``, so none prints. A sink's
batch size, concurrency, rate limits and grouping wait have their kind's default here, as
fields, so there is one place to read and to override them; a kind has only the ones that make
sense for it. Every sink but ``log`` has ``concurrency`` and ``rate_limit_per_s``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

SinkName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _http_url(value: SecretStr) -> SecretStr:
    from urllib.parse import urlsplit

    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL may hold a token: say what is wrong without echoing it.
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


HttpUrl = Annotated[SecretStr, AfterValidator(_http_url)]


class _Delivery(_Section):
    """What every sink but ``log`` shares: retry and give-up policy, and the receiver's limits.

    A send held by ``concurrency`` or ``rate_limit_per_s`` waits; it is not an attempt and
    never fails or dead-letters for being held.
    """

    name: SinkName
    timeout_s: float = Field(10.0, gt=0, le=300)
    backoff_base_s: float = Field(0.25, gt=0)
    """A row's first retry on a healthy sink comes within this (full jitter), then doubles;
    the circuit's probes start from it too. A quarter second keeps commit-to-delivered p99
    near 3 s with a receiver failing a third of its messages (the benchmark's flaky run)."""
    backoff_cap_s: float = Field(600.0, gt=0)
    max_age_s: float = Field(86_400.0, gt=0)
    """A row not delivered this long after it was committed is dead-lettered."""
    concurrency: int = Field(1, ge=1, le=256)
    """Requests in flight at once. Above 1 each request carries one transition (one row of an
    invocation in flight at most, so order per invocation holds), so there is no batching."""
    rate_limit_per_s: float | None = Field(None, gt=0, le=10_000)
    """At most this many requests a second (a token bucket: bursts of up to one second's worth,
    at least one); null: no cap of its own."""


class ChatSinkSettings(_Delivery):
    """Chat robots: transitions arriving within ``group_wait_s`` become one message."""

    url: HttpUrl
    group_wait_s: float = Field(10.0, ge=0, le=3600)
    max_per_minute: int = Field(20, ge=1, le=10_000)
    """The robot's own window: at most this many messages in any 60 seconds."""
    max_group: int = Field(50, ge=1, le=500)
    """The most transitions one message carries (the robot's batch size)."""


class LogSinkSettings(_Section):
    """Every routed transition as one structlog event."""

    name: SinkName = "log"
    type: Literal["log"]
    level: Literal["debug", "info", "warning", "error"] = "info"
    max_batch: int = Field(500, ge=1, le=10_000)
    """The most transitions one pass hands the logger."""


class FileSinkSettings(_Delivery):
    """One JSON line per transition appended to ``path`` (reopened on SIGHUP for logrotate)."""

    type: Literal["file"]
    path: str = Field(min_length=1)
    max_batch: int = Field(500, ge=1, le=10_000)
    """The most lines one write (and one fsync) carries."""


class WebhookSinkSettings(_Delivery):
    """A Standard Webhooks POST per transition."""

    type: Literal["webhook"]
    url: HttpUrl
    secret: SecretStr | None = None
    """``whsec_`` + base64 of 24 to 64 random bytes."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    concurrency: int = Field(
        16, ge=1, le=256, validation_alias=AliasChoices("concurrency", "max_in_flight")
    )
    """POSTs that may run at once, each for a different invocation (1: one at a time).
    ``max_in_flight``, its old name, is still accepted."""

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_concurrency(cls, data: Any) -> Any:
        # Both given would otherwise read as "max_in_flight: Extra inputs are not permitted".
        if isinstance(data, dict) and "concurrency" in data and "max_in_flight" in data:
            raise ValueError("give concurrency or its old name max_in_flight, not both")
        return data

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        import base64
        import binascii

        if value is None:
            return None
        text = value.get_secret_value()
        if not text.startswith("whsec_"):
            raise ValueError("a webhook secret starts with 'whsec_' followed by base64")
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValueError("the part after 'whsec_' is not valid base64") from None
        if not 24 <= len(key) <= 64:
            raise ValueError(f"the webhook key is {len(key)} bytes; use 24 to 64")
        return value


class SignedChatSinkSettings(ChatSinkSettings):
    """A robot that can require each message to be signed with a secret of its own."""

    secret: SecretStr | None = None


class DingTalkSinkSettings(SignedChatSinkSettings):
    """A DingTalk custom robot (markdown), optionally signed with its ``SEC...`` secret."""

    type: Literal["dingtalk"]
    at_mobiles: list[str] = Field(default_factory=list)


class FeishuSinkSettings(SignedChatSinkSettings):
    """A Feishu / Lark custom bot, optionally signed."""

    type: Literal["feishu"]
    max_per_minute: int = Field(100, ge=1, le=10_000)
    rate_limit_per_s: float | None = Field(5.0, gt=0, le=10_000)
    """Feishu allows 100 a minute and 5 a second per bot."""


class WeComSinkSettings(ChatSinkSettings):
    """A WeCom group robot (markdown)."""

    type: Literal["wecom"]


class SlackSinkSettings(ChatSinkSettings):
    """A Slack incoming webhook (blocks plus a text fallback)."""

    type: Literal["slack"]
    max_per_minute: int = Field(60, ge=1, le=10_000)
    rate_limit_per_s: float | None = Field(1.0, gt=0, le=10_000)
    """Slack allows about one message a second per incoming webhook."""


class AlertmanagerSinkSettings(_Delivery):
    """Alerts pushed to Alertmanager's ``/api/v2/alerts``."""

    type: Literal["alertmanager"]
    url: HttpUrl
    """The Alertmanager base URL, e.g. http://127.0.0.1:9093."""
    ends_after_s: float = Field(3600.0, gt=0)
    """Alerts get a finite endsAt this long after they start: a failure is an event."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    max_batch: int = Field(100, ge=1, le=1000)
    """The most alerts one POST carries."""


SinkSettings = Annotated[
    LogSinkSettings
    | FileSinkSettings
    | WebhookSinkSettings
    | DingTalkSinkSettings
    | FeishuSinkSettings
    | WeComSinkSettings
    | SlackSinkSettings
    | AlertmanagerSinkSettings,
    Field(discriminator="type"),
]
SINK_TYPES = ("log", "file", "webhook", "dingtalk", "feishu", "wecom", "slack", "alertmanager")
