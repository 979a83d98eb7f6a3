"""The explicit sink registry: config ``type`` to the class that implements it."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from watcher.config.delivery import (
    AlertmanagerSinkSettings,
    DingTalkSinkSettings,
    FeishuSinkSettings,
    FileSinkSettings,
    LogSinkSettings,
    SinkSettings,
    SlackSinkSettings,
    WebhookSinkSettings,
    WeComSinkSettings,
)
from watcher.delivery.record import DeliveryPolicy
from watcher.delivery.sinks.alertmanager import AlertmanagerSink
from watcher.delivery.sinks.base import REAL_TIME, Sink, Timer
from watcher.delivery.sinks.dingtalk import DingTalkSink
from watcher.delivery.sinks.feishu import FeishuSink
from watcher.delivery.sinks.file import FileSink
from watcher.delivery.sinks.log import LogSink
from watcher.delivery.sinks.slack import SlackSink
from watcher.delivery.sinks.webhook import WebhookSink
from watcher.delivery.sinks.wecom import WeComSink


def build_sink(
    entry: SinkSettings,
    session: aiohttp.ClientSession,
    region: str | None,
    *,
    timer: Timer = REAL_TIME,
) -> Sink:
    """The sink for one config entry; ``timer`` is the time its rate limits run on."""
    match entry:
        case LogSinkSettings():
            return LogSink(entry)
        case FileSinkSettings():
            return FileSink(entry, timer=timer)
        case WebhookSinkSettings():
            return WebhookSink(entry, session, timer=timer)
        case DingTalkSinkSettings():
            return DingTalkSink(entry, session, region=region, timer=timer)
        case FeishuSinkSettings():
            return FeishuSink(entry, session, region=region, timer=timer)
        case WeComSinkSettings():
            return WeComSink(entry, session, region=region, timer=timer)
        case SlackSinkSettings():
            return SlackSink(entry, session, region=region, timer=timer)
        case AlertmanagerSinkSettings():
            return AlertmanagerSink(entry, session, region=region, timer=timer)


def build_sinks(
    settings: Sequence[SinkSettings], session: aiohttp.ClientSession, region: str | None = None
) -> dict[str, Sink]:
    """One sink per configured entry, by name, in config order."""
    return {entry.name: build_sink(entry, session, region) for entry in settings}


def delivery_policies(settings: Sequence[SinkSettings]) -> dict[str, DeliveryPolicy]:
    """Each sink's retry policy (the log sink never fails, so it has the default)."""
    return {
        entry.name: DeliveryPolicy(entry.backoff_base_s, entry.backoff_cap_s, entry.max_age_s)
        for entry in settings
        if not isinstance(entry, LogSinkSettings)
    }
