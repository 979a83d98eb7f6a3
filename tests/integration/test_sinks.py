"""Each sink against a real receiver on loopback: payload shape, signatures, classification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
from pydantic import TypeAdapter
from standardwebhooks.webhooks import Webhook

from tests.conftest import Receiver
from watcher.config.delivery import SinkSettings
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Transition
from watcher.delivery.sinks import Outgoing, SinkError
from watcher.delivery.sinks.dingtalk import dingtalk_sign
from watcher.delivery.sinks.feishu import feishu_sign
from watcher.delivery.sinks.registry import build_sink

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DING_SECRET = "SECthisisademosecret-for-tests"
FEISHU_SECRET = "feishu-test-secret"
ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)


def failed(invocation_id: str = "job-1", function: str = "transcode") -> Transition:
    """The status_changed transition of an invocation first seen Failed."""
    ref = InvocationRef(FunctionRef(Api.FC2, function, "media", "LATEST"), invocation_id)
    body = {
        "status": "Failed",
        "alreadyRetriedTimes": 3,
        "invocationErrorMessage": "UnhandledInvocationError: moov atom not found",
        "invocationPayload": '{"video": "a.mp4"}',
    }
    result = decide.diff(
        None, Invocation.model_validate(body), ref=ref, observed_ms=1_795_680_000_000
    )
    return result.transitions[-1]


def sink_for(settings: dict[str, Any], session: aiohttp.ClientSession) -> Any:
    return build_sink(ADAPTER.validate_python(settings), session, "cn-hangzhou")


async def test_webhook_is_standard_webhooks_signed(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """The reference library verifies the signature; webhook-id is the transition id."""
    sink = sink_for(
        {
            "name": "hook",
            "type": "webhook",
            "url": receiver.url + "/hook",
            "secret": WHSEC,
            "headers": {"X-Team": "data"},
        },
        http_session,
    )
    transition = failed()
    await sink.send([Outgoing(transition, "critical")])
    path, headers, body = receiver.requests[0]
    assert path == "/hook"
    lowered = {k.lower(): v for k, v in headers.items()}
    payload = Webhook(WHSEC).verify(body, lowered)
    assert lowered["webhook-id"] == transition.id
    assert lowered["x-team"] == "data"
    assert payload["type"] == "invocation.status_changed"
    assert payload["data"]["invocationId"] == "job-1"
    assert payload["data"]["status"] == "Failed"
    assert payload["data"]["invocation"]["alreadyRetriedTimes"] == 3
    assert payload["data"]["severity"] == "critical"
    datetime.fromisoformat(payload["timestamp"])


def test_standard_webhooks_vector() -> None:
    """The signing library reproduces the Standard Webhooks reference vector."""
    from datetime import UTC

    signature = Webhook(WHSEC).sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, UTC),
        '{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (500, {}, True, None),
        (502, {}, True, None),
        (501, {}, False, None),
        (408, {}, True, None),
        (429, {"Retry-After": "17"}, True, 17.0),
        (503, {"Retry-After": "3"}, True, 3.0),
        (410, {}, False, None),
        (400, {}, False, None),
        (401, {}, False, None),
        (404, {}, False, None),
    ],
)
async def test_webhook_failures_are_classified(
    receiver: Receiver,
    http_session: aiohttp.ClientSession,
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after: float | None,
) -> None:
    """408, 429 and 5xx but 501 are retried (with Retry-After); other failures are permanent."""
    receiver.answer((status, "nope", headers))
    sink = sink_for({"name": "hook", "type": "webhook", "url": receiver.url}, http_session)
    with pytest.raises(SinkError) as caught:
        await sink.send([Outgoing(failed())])
    assert caught.value.retryable is retryable
    assert caught.value.retry_after_s == retry_after


async def test_webhook_timeout_is_retryable(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """A receiver slower than timeout_s is a retryable failure naming the redacted URL."""
    receiver.delay_s = 1.0
    sink = sink_for(
        {
            "name": "hook",
            "type": "webhook",
            "url": receiver.url + "/secret-path?token=abc",
            "timeout_s": 0.1,
        },
        http_session,
    )
    with pytest.raises(SinkError) as caught:
        await sink.send([Outgoing(failed())])
    assert caught.value.retryable
    assert "secret-path" not in str(caught.value)
    assert "abc" not in str(caught.value)


def test_dingtalk_vector() -> None:
    """DingTalk signing reproduces the documented example."""
    assert (
        dingtalk_sign("SECthisisademosecret", 1700000000000)
        == "XZm+VoefjAV9oiK7ZlW/VbkYFP87SePEwlgF5Ors0LU="
    )


def test_feishu_vector() -> None:
    """Feishu signing keys HMAC with timestamp+secret over an empty message, as documented."""
    assert feishu_sign("demo", 1599360473) == "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="


async def test_dingtalk_signed_markdown(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """The robot gets markdown and a URL carrying timestamp and a sign it can verify."""
    receiver.answer((200, '{"errcode":0,"errmsg":"ok"}'))
    sink = sink_for(
        {
            "name": "ding",
            "type": "dingtalk",
            "url": receiver.url + "/robot/send?access_token=T0KEN",
            "secret": DING_SECRET,
            "at_mobiles": ["13800000000"],
        },
        http_session,
    )
    await sink.send([Outgoing(failed(), "critical")])
    path, _, body = receiver.requests[0]
    query = parse_qs(urlsplit(path).query)
    assert query["access_token"] == ["T0KEN"]
    timestamp = query["timestamp"][0]
    expected = base64.b64encode(
        hmac.new(
            DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256
        ).digest()
    ).decode()
    assert query["sign"] == [expected]
    message = json.loads(body)
    assert message["msgtype"] == "markdown"
    assert "Failed after 3 retries" in message["markdown"]["title"]
    assert "moov atom not found" in message["markdown"]["text"]
    assert "@13800000000" in message["markdown"]["text"]
    assert message["at"]["atMobiles"] == ["13800000000"]


@pytest.mark.parametrize(
    ("sink_type", "reply", "retryable"),
    [
        ("dingtalk", '{"errcode":310000,"errmsg":"sign not match"}', False),
        ("dingtalk", '{"errcode":130101,"errmsg":"send too fast"}', True),
        ("wecom", '{"errcode":93000,"errmsg":"invalid webhook url"}', False),
        ("wecom", '{"errcode":45009,"errmsg":"api freq out of limit"}', True),
        ("feishu", '{"code":19021,"msg":"sign match fail"}', False),
        ("feishu", '{"code":11232,"msg":"frequency limited"}', True),
    ],
)
async def test_robot_error_codes_in_a_200(
    receiver: Receiver,
    http_session: aiohttp.ClientSession,
    sink_type: str,
    reply: str,
    retryable: bool,
) -> None:
    """Robots answer 200 with an error code: throttling codes retry, the rest are permanent."""
    receiver.answer((200, reply))
    sink = sink_for({"name": "robot", "type": sink_type, "url": receiver.url + "/x"}, http_session)
    with pytest.raises(SinkError) as caught:
        await sink.send([Outgoing(failed())])
    assert caught.value.retryable is retryable


async def test_feishu_sign_in_body(receiver: Receiver, http_session: aiohttp.ClientSession) -> None:
    """Feishu gets a post with timestamp and sign in the body, verifiable with its secret."""
    receiver.answer((200, '{"code":0,"msg":"success"}'))
    sink = sink_for(
        {
            "name": "lark",
            "type": "feishu",
            "url": receiver.url + "/open-apis/bot/v2/hook/abc",
            "secret": FEISHU_SECRET,
        },
        http_session,
    )
    await sink.send([Outgoing(failed())])
    body = receiver.json_bodies()[0]
    key = f"{body['timestamp']}\n{FEISHU_SECRET}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["msg_type"] == "post"
    post = body["content"]["post"]["zh_cn"]
    assert "Failed" in post["title"]
    texts = [part.get("text", "") for paragraph in post["content"] for part in paragraph]
    assert any("moov atom" in text for text in texts)


async def test_wecom_markdown_is_capped(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """WeCom gets markdown of at most 4096 bytes, even for a huge group."""
    receiver.answer((200, '{"errcode":0,"errmsg":"ok"}'))
    sink = sink_for(
        {"name": "wx", "type": "wecom", "url": receiver.url + "/cgi-bin/webhook/send?key=K"},
        http_session,
    )
    await sink.send([Outgoing(failed(f"job-{i:03d}-{'x' * 80}")) for i in range(50)])
    content = receiver.json_bodies()[0]["markdown"]["content"]
    assert len(content.encode()) <= 4096
    assert content.startswith("### [INFO] 50 invocations of transcode: failed")


async def test_slack_blocks_and_429(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """Slack gets blocks plus a text fallback; its 429 carries Retry-After into the retry."""
    receiver.answer((200, "ok"), (429, "rate_limited", {"Retry-After": "30"}))
    # No rate of our own: the 429 must come from the receiver, not wait a second for a token.
    settings = {"name": "slack", "type": "slack", "url": receiver.url + "/services/T/B/X"}
    sink = sink_for({**settings, "rate_limit_per_s": None}, http_session)
    await sink.send([Outgoing(failed())])
    payload = receiver.json_bodies()[0]
    assert "Failed" in payload["text"]
    assert payload["blocks"][0]["type"] == "section"
    with pytest.raises(SinkError) as caught:
        await sink.send([Outgoing(failed())])
    assert caught.value.retryable
    assert caught.value.retry_after_s == 30


async def test_alertmanager_alerts(receiver: Receiver, http_session: aiohttp.ClientSession) -> None:
    """Alertmanager gets postable alerts with the contract's labels (one alert per invocation)
    and a finite endsAt, counted from the send (the payload's clock: test_alertmanager_payload)."""
    sink = sink_for(
        {"name": "am", "type": "alertmanager", "url": receiver.url, "ends_after_s": 600},
        http_session,
    )
    before = time.time()
    await sink.send([Outgoing(failed("a"), "critical"), Outgoing(failed("b"), "critical")])
    after = time.time()
    path, _, _ = receiver.requests[0]
    assert path == "/api/v2/alerts"
    alerts = receiver.json_bodies()[0]
    assert len(alerts) == 2
    first = alerts[0]
    assert first["labels"] == {
        "alertname": "FCInvocationFailed",
        "service": "media",
        "function": "transcode",
        "qualifier": "LATEST",
        "invocation_id": "a",
        "status": "Failed",
        "severity": "critical",
    }
    assert alerts[1]["labels"]["invocation_id"] == "b"
    assert first["annotations"]["invocation_id"] == "a"
    assert "moov atom" in first["annotations"]["error"]
    starts = datetime.fromisoformat(first["startsAt"])
    ends = datetime.fromisoformat(first["endsAt"])
    assert starts.timestamp() == failed("a").observed_ms / 1000
    assert before + 600 - 0.001 <= ends.timestamp() <= after + 600
    assert first["generatorURL"].startswith("https://")


async def test_file_sink_appends_and_reopens(
    tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    """One JSON line per transition; after a rename and reopen(), writing goes to a new file."""
    path = tmp_path / "transitions.jsonl"
    sink = build_sink(
        ADAPTER.validate_python({"name": "f", "type": "file", "path": str(path)}),
        http_session,
        None,
    )
    await sink.send([Outgoing(failed("a")), Outgoing(failed("b"))])
    path.rename(tmp_path / "transitions.jsonl.1")
    sink.reopen()
    await sink.send([Outgoing(failed("c"))])
    await sink.close()
    rotated = [
        json.loads(line) for line in (tmp_path / "transitions.jsonl.1").read_text().splitlines()
    ]
    fresh = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["invocationId"] for r in rotated] == ["a", "b"]
    assert [r["invocationId"] for r in fresh] == ["c"]


async def test_grouped_message_reads_like_a_summary(
    receiver: Receiver, http_session: aiohttp.ClientSession
) -> None:
    """Twelve failures in one batch become one message titled with the count."""
    receiver.answer((200, '{"errcode":0}'))
    sink = sink_for(
        {"name": "ding", "type": "dingtalk", "url": receiver.url + "/r?access_token=t"},
        http_session,
    )
    await sink.send([Outgoing(failed(f"job-{i}"), "critical") for i in range(12)])
    assert len(receiver.requests) == 1
    message = receiver.json_bodies()[0]["markdown"]
    assert message["title"] == "12 invocations of transcode: failed"
    assert message["text"].count("\n\n- ") == 12
    assert unquote("%5BCRITICAL%5D") in message["text"]
