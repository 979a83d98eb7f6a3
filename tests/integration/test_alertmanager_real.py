"""The Alertmanager sink against a real Alertmanager and its own webhook receiver.

What counts is what a person would be told: the notifications Alertmanager sends to its
webhook receiver, grouped the way the README recommends (``group_by: [alertname, function]``).
Every wait is bounded by a deadline and fails saying what never arrived; no test asserts a
duration.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import TypeAdapter

from tests.programs import find_program
from watcher.config.delivery import SinkSettings
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Snapshot, Transition, TransitionType
from watcher.core.route import alert_worthy
from watcher.delivery.sinks import Outgoing, Sink
from watcher.delivery.sinks.registry import build_sink

pytestmark = pytest.mark.slow

DEADLINE_S = 30.0
ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkSettings)
CONFIG = """\
route:
  receiver: hook
  group_by: [alertname, function]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}
        send_resolved: true
"""


@dataclass
class RealAlertmanager:
    """A running Alertmanager and what its webhook receiver was told."""

    url: str
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self, alertname: str, function: str) -> list[dict[str, Any]]:
        """Every alert of every notification so far about ``alertname`` of ``function``."""
        return [
            one
            for note in self.notifications
            for one in note["alerts"]
            if one["labels"].get("alertname") == alertname
            and one["labels"].get("function") == function
        ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _until(done: Callable[[], Any], what: str, seen: Callable[[], object]) -> Any:
    """Poll ``done`` until it is truthy, or fail after DEADLINE_S naming ``what``."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = done()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {DEADLINE_S:g} s; seen: {seen()!r}")
        await asyncio.sleep(0.1)


async def _ready(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    async def answered() -> bool:
        if process.returncode is not None:
            pytest.fail(f"alertmanager exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/-/ready") as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False

    await _until(answered, f"{url}/-/ready answering 200", lambda: log.read_text()[-2000:])


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[RealAlertmanager]:
    """Alertmanager on loopback with a webhook receiver in this test; both stopped after."""
    binary = find_program(
        "prometheus-alertmanager", package="prometheus-alertmanager", also=("alertmanager",)
    )
    port = _free_port()
    running = RealAlertmanager(url=f"http://127.0.0.1:{port}")

    async def hook(request: web.Request) -> web.Response:
        running.notifications.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    (tmp_path / "am.yml").write_text(CONFIG.format(hook=hook_url))
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--storage.path={tmp_path}",
            f"--config.file={tmp_path / 'am.yml'}",
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await _ready(running.url, process, log)
        yield running
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        await runner.cleanup()


def am_sink(url: str, session: aiohttp.ClientSession, **extra: Any) -> Sink:
    settings = ADAPTER.validate_python({"name": "am", "type": "alertmanager", "url": url, **extra})
    return build_sink(settings, session, "cn-hangzhou")


def ref(function: str, invocation_id: str) -> InvocationRef:
    return InvocationRef(FunctionRef(Api.FC3, function, None, "LATEST"), invocation_id)


def polled(
    where: InvocationRef, status: str, observed_ms: int, before: Snapshot | None = None
) -> tuple[Snapshot, tuple[Transition, ...]]:
    body = {"status": status, "invocationErrorMessage": "UnhandledInvocationError: boom"}
    result = decide.diff(
        before, Invocation.model_validate(body), ref=where, observed_ms=observed_ms
    )
    return result.snapshot, result.transitions


def routed(transition: Transition) -> Outgoing:
    """As the default routes send it to Alertmanager, with their severity."""
    severity = alert_worthy(transition)
    assert severity is not None, transition.type
    return Outgoing(transition, severity)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_burst_of_failures_is_one_alert_each(
    alertmanager: RealAlertmanager, http_session: aiohttp.ClientSession
) -> None:
    """Three invocations of one function fail one after the other: the receiver is told of
    all three, as three alerts, in the function's group."""
    sink = am_sink(alertmanager.url, http_session)
    ids = {"burst-1", "burst-2", "burst-3"}
    for invocation_id in sorted(ids):
        _, (failed,) = polled(ref("burst", invocation_id), "Failed", now_ms())
        await sink.send([routed(failed)])

    def told() -> list[dict[str, Any]]:
        return alertmanager.alerts("FCInvocationFailed", "burst")

    def all_three() -> bool:
        return {a["labels"].get("invocation_id") for a in told()} >= ids

    await _until(all_three, f"notifications of failed invocations {sorted(ids)}", told)
    firing = [a for a in told() if a["status"] == "firing"]
    by_invocation = {a["labels"]["invocation_id"]: a["fingerprint"] for a in firing}
    assert set(by_invocation) == ids
    assert len(set(by_invocation.values())) == 3  # three alerts, not one overwritten thrice
    last = alertmanager.notifications[-1]
    assert last["groupLabels"] == {"alertname": "FCInvocationFailed", "function": "burst"}


async def test_poll_recovered_resolves_the_poll_failing_alert(
    alertmanager: RealAlertmanager, http_session: aiohttp.ClientSession
) -> None:
    """poll_failing fires; poll_recovered (with another severity and status) resolves that
    very alert instead of firing an alert of its own."""
    sink = am_sink(alertmanager.url, http_session)
    where = ref("flaky", "poll-1")
    running, _ = polled(where, "Running", now_ms() - 60_000)
    failing = decide.poll_failed(
        running, ref=where, observed_ms=now_ms(), consecutive_failures=3, threshold=3, detail="503"
    )
    await sink.send([routed(t) for t in failing.transitions])

    def told() -> list[dict[str, Any]]:
        return alertmanager.alerts("FCInvocationPollFailing", "flaky")

    def has(status: str) -> bool:
        return any(a["status"] == status for a in told())

    await _until(lambda: has("firing"), "a firing FCInvocationPollFailing notification", told)
    _, after = polled(where, "Succeeded", now_ms(), failing.snapshot)
    assert after[0].type is TransitionType.POLL_RECOVERED
    await sink.send([routed(after[0])])

    await _until(lambda: has("resolved"), "a resolved FCInvocationPollFailing notification", told)
    (fired,) = {a["fingerprint"] for a in told() if a["status"] == "firing"}
    (ended,) = {a["fingerprint"] for a in told() if a["status"] == "resolved"}
    assert ended == fired
    assert alertmanager.alerts("FCInvocationPollRecovered", "flaky") == []
    async with http_session.get(f"{alertmanager.url}/api/v2/alerts") as reply:
        standing = await reply.json()
    assert [a for a in standing if a["labels"].get("function") == "flaky"] == []


async def test_a_late_delivery_still_fires(
    alertmanager: RealAlertmanager, http_session: aiohttp.ClientSession
) -> None:
    """A failure observed an hour ago, sent now (Alertmanager was down longer than
    ends_after_s, or a dead letter is redelivered), reaches the receiver firing."""
    sink = am_sink(alertmanager.url, http_session, ends_after_s=600)
    _, (failed,) = polled(ref("late", "late-1"), "Failed", now_ms() - 3_600_000)
    await sink.send([routed(failed)])

    def told() -> list[dict[str, Any]]:
        return alertmanager.alerts("FCInvocationFailed", "late")

    def fired() -> bool:
        return any(a["status"] == "firing" for a in told())

    await _until(fired, "a firing notification of the failure observed an hour ago", told)
    assert {a["labels"].get("invocation_id") for a in told()} == {"late-1"}


async def test_the_alert_resolves_when_ends_at_passes(
    alertmanager: RealAlertmanager, http_session: aiohttp.ClientSession
) -> None:
    """With ``ends_after_s: 2`` nothing more is sent, yet the alert resolves by itself once its
    endsAt passes: the receiver is told firing, then resolved, with the documented labels and
    annotations."""
    sink = am_sink(alertmanager.url, http_session, ends_after_s=2)
    _, (failed,) = polled(ref("ending", "end-1"), "Failed", now_ms())
    await sink.send([routed(failed)])

    def told() -> list[dict[str, Any]]:
        return alertmanager.alerts("FCInvocationFailed", "ending")

    def has(status: str) -> bool:
        return any(a["status"] == status for a in told())

    await _until(lambda: has("firing"), "a firing notification", told)
    (alert,) = [a for a in told() if a["status"] == "firing"]
    assert alert["labels"]["invocation_id"] == "end-1"
    assert alert["labels"]["severity"] == "critical"
    assert "UnhandledInvocationError: boom" in alert["annotations"]["description"]
    await _until(lambda: has("resolved"), "a resolved notification after endsAt", told)
    (resolved,) = [a for a in told() if a["status"] == "resolved"]
    assert resolved["fingerprint"] == alert["fingerprint"]


def test_the_documented_route_is_valid_and_groups_by_function() -> None:
    """config/alertmanager.example.yml, which the README points to, is a config that
    Alertmanager's own checker accepts, with the grouping the tests above rely on."""
    amtool = find_program("amtool", package="prometheus-alertmanager", also=("prometheus-amtool",))
    example = Path(__file__).resolve().parents[2] / "config" / "alertmanager.example.yml"
    checked = subprocess.run(
        [amtool, "check-config", str(example)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "group_by: [alertname, function]" in example.read_text()
