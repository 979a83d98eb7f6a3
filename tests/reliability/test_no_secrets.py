"""The daemon delivering through routes to real receivers, and keeping every secret out of
its output while its sinks fail."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
from standardwebhooks.webhooks import Webhook

from tests.conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, EmulatorFactory, Receiver
from tests.integration.daemon import (
    pending_outbox,
    read_log,
    run_cli,
    stop,
    wait_until,
    write_config,
)

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SCRIPT: list[dict[str, Any]] = [
    {
        "id": f"job-{n}",
        "timeline": [
            {"at_s": 0, "status": "Running"},
            {"at_s": 1, "status": "Failed", "error": "boom"},
        ],
    }
    for n in range(3)
] + [{"id": "ok-1", "timeline": [{"at_s": 0, "status": "Succeeded"}]}]
IDS = [spec["id"] for spec in SCRIPT]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_sinks(
    config_path: Path, sinks: list[dict[str, Any]], routes: list[dict[str, Any]]
) -> None:
    config = json.loads(config_path.read_text())
    config["sinks"] = [{"name": "log", "type": "log"}, *sinks]
    config["routes"] = routes
    config_path.write_text(json.dumps(config))


async def test_failures_reach_the_webhook_through_a_route(
    start_emulator: EmulatorFactory, receiver: Receiver, tmp_path: Path
) -> None:
    """Only the routed transitions (Failed) reach the webhook, signed, each id once."""
    emu = await start_emulator(invocations=SCRIPT)
    config = write_config(tmp_path, emu.url, IDS)
    _with_sinks(
        config,
        [{"name": "hook", "type": "webhook", "url": receiver.url + "/hook", "secret": WHSEC}],
        [
            {
                "match": {"type": "invocation.status_changed", "status": ["Failed"]},
                "sinks": ["hook"],
                "severity": "critical",
                "continue": True,
            },
            {"sinks": ["log"]},
        ],
    )
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run.log")
    await wait_until(
        lambda: len(receiver.requests) == 0 and bool(emu.stats.get("requests")), "first polls"
    )
    emu.clock.advance(1)
    await wait_until(lambda: len(receiver.requests) >= 3, "three failures delivered")
    await wait_until(lambda: pending_outbox(tmp_path / "state.db") == 0, "outbox drained")
    assert await stop(process) == 0
    payloads = []
    for _, headers, body in receiver.requests:
        payloads.append(Webhook(WHSEC).verify(body, {k.lower(): v for k, v in headers.items()}))
    assert sorted(p["data"]["invocationId"] for p in payloads) == ["job-0", "job-1", "job-2"]
    assert {p["data"]["status"] for p in payloads} == {"Failed"}
    assert {p["data"]["severity"] for p in payloads} == {"critical"}


SECRETS = {
    "fc_secret": ACCESS_KEY_SECRET,
    "fc_key": ACCESS_KEY_ID,
    "whsec": "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTAxMjM0NTY3ODk=",
    "header": "Bearer hdr-token-9f8e7d6c",
    "ding_token": "dingtoken7a6b5c4d",
    "ding_secret": "SECding0123456789abcdef",
    "feishu_hook": "feishuhook3e4f5a6b",
    "feishu_secret": "feishusecret1c2d3e",
    "wecom_key": "wecomkey8d7c6b5a",
    "slack_path": "T000/B000/slacksecret42",
    "am_password": "ampassword77",
}


async def test_no_secret_in_the_output_of_a_failing_run(
    start_emulator: EmulatorFactory, receiver: Receiver, tmp_path: Path
) -> None:
    """Every sink configured, every one failing (errors, a closed port), FC refusing a wrong
    key: the daemon's whole output and the state DB's rows contain no secret."""
    receiver.default = (500, "internal error", {})
    still_running = {"id": "run-1", "timeline": [{"at_s": 0, "status": "Running"}]}
    emu = await start_emulator(invocations=[*SCRIPT, still_running])
    config = write_config(tmp_path, emu.url, [*IDS, "run-1"], poll={"failure_threshold": 1})
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port here
    sinks = [
        {
            "name": "hook",
            "type": "webhook",
            "url": f"{receiver.url}/hook?token={SECRETS['ding_token']}x",
            "secret": SECRETS["whsec"],
            "headers": {"Authorization": SECRETS["header"]},
            "backoff_base_s": 0.05,
        },
        {
            "name": "ding",
            "type": "dingtalk",
            "url": f"{receiver.url}/robot/send?access_token={SECRETS['ding_token']}",
            "secret": SECRETS["ding_secret"],
            "group_wait_s": 0,
            "backoff_base_s": 0.05,
        },
        {
            "name": "lark",
            "type": "feishu",
            "url": f"{closed}/open-apis/bot/v2/hook/{SECRETS['feishu_hook']}",
            "secret": SECRETS["feishu_secret"],
            "group_wait_s": 0,
            "backoff_base_s": 0.05,
        },
        {
            "name": "wx",
            "type": "wecom",
            "url": f"{receiver.url}/cgi-bin/webhook/send?key={SECRETS['wecom_key']}",
            "group_wait_s": 0,
            "backoff_base_s": 0.05,
        },
        {
            "name": "slack",
            "type": "slack",
            "url": f"{receiver.url}/services/{SECRETS['slack_path']}",
            "group_wait_s": 0,
            "backoff_base_s": 0.05,
        },
        {
            "name": "am",
            "type": "alertmanager",
            "url": f"http://admin:{SECRETS['am_password']}@127.0.0.1:9",
            "backoff_base_s": 0.05,
        },
        {
            "name": "file",
            "type": "file",
            "path": str(tmp_path / "no-such-dir" / "out.jsonl"),
            "backoff_base_s": 0.05,
        },
    ]
    _with_sinks(config, sinks, [{"sinks": [s["name"] for s in sinks] + ["log"]}])
    metrics_port = _free_port()
    document = json.loads(config.read_text())
    document["http"] = {"listen": f"127.0.0.1:{metrics_port}"}
    config.write_text(json.dumps(document))
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    emu.clock.advance(1)
    every_sink = {"hook", "ding", "lark", "wx", "slack", "am", "file"}

    def failing() -> set[str]:
        # One delivery_retrying line per sink per interval (with the attempts it stands for).
        return {e["sink"] for e in read_log([log]) if e.get("event") == "delivery_retrying"}

    await wait_until(lambda: failing() >= every_sink, "failing deliveries on every sink")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        metrics = await response.text()
    assert 'fc_watcher_deliveries_total{result="retry",sink="am"}' in metrics
    # and FC itself refusing: a wrong secret for a while
    assert await stop(process) == 0
    bad = json.loads(config.read_text())
    bad["fc"]["access_key_secret"] = ACCESS_KEY_SECRET + "-wrong"
    del bad["http"]
    config.write_text(json.dumps(bad))
    emu.clock.advance(5)
    process = await run_cli("run", "-c", str(config), stdout=log)
    await wait_until(
        lambda: any(e.get("event") == "fc_auth_failed" for e in read_log([log])), "auth failure"
    )
    assert await stop(process) == 0
    stderr = (await process.stderr.read()).decode() if process.stderr else ""

    output = log.read_text() + stderr + metrics
    assert failing() >= every_sink
    db_text = "".join(
        path.read_bytes().decode(errors="replace") for path in tmp_path.glob("state.db*")
    )
    for name, secret in SECRETS.items():
        assert secret not in output, f"{name} leaked into the logs or /metrics"
        assert secret not in db_text, f"{name} leaked into the state DB"
    assert (ACCESS_KEY_SECRET + "-wrong") not in output
