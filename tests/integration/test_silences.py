"""Silences end to end: the store (add, list, expire, revisions, retention), the commit path as
``build`` wires it (a silenced transition is recorded and logged, never queued for the
webhook), the HTTP API over real loopback HTTP (401, 400, 413, 404, success), the metrics
under promtool, and a daemon beside which ``fc-watcher silence`` adds and expires a silence:
what it held back is never sent, what comes after its end is."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.conftest import EmulatorFactory, Receiver, emulator_config, emulator_fc
from tests.integration.daemon import (
    pending_outbox,
    read_log,
    run_cli,
    run_to_end,
    stop,
    transitions_in,
    wait_until,
)
from tests.programs import find_program
from watcher.config.models import PollSettings, Tracked
from watcher.core.clock import SystemClock
from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import Snapshot
from watcher.core.route import RouteMatch
from watcher.core.silence import SilenceSpec
from watcher.daemon.api import TrackApi
from watcher.daemon.build import build
from watcher.daemon.gauges import SilenceCollector
from watcher.daemon.http import HttpEndpoint
from watcher.daemon.live import LiveTracking
from watcher.daemon.silences import ActiveSilences
from watcher.store.retention import prune_once
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

T0 = 1_796_000_000_000
HOUR_MS = 3_600_000
TOKEN = "tok-silences-7c1e93ab40d2"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FN = FunctionRef(Api.FC2, "demo-function", "demo-service", "LATEST")


def spec(match: RouteMatch, starts_ms: int = T0, ends_ms: int = T0 + HOUR_MS) -> SilenceSpec:
    return SilenceSpec(match, starts_ms, ends_ms, "re-encode backlog", "alice")


class FixedClock:
    """Retention's wall clock at T0."""

    def monotonic(self) -> float:
        return 0.0

    def wall_ms(self) -> int:
        return T0


def rows(db_path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return [tuple(row) for row in db.execute(sql, params)]
    finally:
        db.close()


# -- the store --------------------------------------------------------------------------------


async def test_the_store_adds_lists_and_expires_silences_each_change_a_new_revision(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        rev0, found = await store.silence_changes(0, T0)
        assert found == []
        added = await store.add_silence(spec(RouteMatch(function="enc-*", labels={"t": "m"})), T0)
        assert re.fullmatch(r"[0-9a-f]{12}", added.id)
        rev1, changed = await store.silence_changes(rev0, T0)
        assert rev1 > rev0
        assert changed == [added]
        assert await store.silence_changes(rev1, T0) == (rev1, [])  # nothing new: same place
        assert (await store.silence_changes(0, T0))[1] == [added]  # a daemon that starts now
        assert await store.list_silences(ended_after_ms=T0) == [added]

        expiry = await store.expire_silence(added.id, T0 + 60_000)
        assert expiry.expired
        assert expiry.silence is not None
        assert expiry.silence.expired_ms == T0 + 60_000
        rev2, changed = await store.silence_changes(rev1, T0 + 60_000)
        assert rev2 > rev1
        assert changed == [expiry.silence]
        assert (await store.silence_changes(0, T0 + 60_000))[1] == []  # ended: not taken
        assert await store.list_silences(ended_after_ms=T0 + 60_000) == []
        assert await store.list_silences(ended_after_ms=T0) == [expiry.silence]  # recent

        again = await store.expire_silence(added.id, T0 + 120_000)
        assert (again.expired, again.silence) == (False, expiry.silence)
        assert (await store.expire_silence("0123456789ab", T0)).silence is None
    finally:
        await store.close()
    reopened = await SqliteStore.open(tmp_path / "state.db")
    try:
        assert await reopened.list_silences(ended_after_ms=T0) == [expiry.silence]  # durable
    finally:
        await reopened.close()


async def test_retention_prunes_long_ended_silences_and_never_reuses_a_revision(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        old = await store.add_silence(spec(RouteMatch(function="a"), 1000, 2000), 1000)
        rev, _ = await store.silence_changes(0, 0)
        kept = await store.add_silence(spec(RouteMatch(function="b")), T0)
        rev_kept, _ = await store.silence_changes(rev, T0)
        await prune_once(store, retention_days=1, protected_keys=(), clock=FixedClock())
        assert [s.id for s in await store.list_silences(ended_after_ms=0)] == [kept.id]
        assert old.id != kept.id
        newer = await store.add_silence(spec(RouteMatch(function="c")), T0)
        rev_new, changed = await store.silence_changes(rev_kept, T0)
        assert rev_new > rev_kept
        assert changed == [newer]
    finally:
        await store.close()


async def test_a_daemon_hears_of_a_silence_another_process_added_at_its_next_refresh(
    tmp_path: Path,
) -> None:
    daemon_store = await SqliteStore.open(tmp_path / "state.db")
    beside = await SqliteStore.open(tmp_path / "state.db", beside_daemon=True)
    try:
        silences = ActiveSilences(daemon_store, SystemClock(), log_sinks=lambda: ["log"])
        await silences.start()
        now = SystemClock().wall_ms()
        added = await beside.add_silence(spec(RouteMatch(function="x"), now, now + HOUR_MS), now)
        assert silences.held() == []
        await silences.refresh()  # what the daemon's half-second tick calls
        assert silences.held() == [added]
        assert silences.active_count() == 1
        await beside.expire_silence(added.id, SystemClock().wall_ms())
        await silences.refresh()
        assert silences.active_count() == 0
    finally:
        await beside.close()
        await daemon_store.close()


# -- the commit path, as build() wires it -------------------------------------------------------


async def test_a_silenced_transition_is_recorded_and_logged_but_never_queued_for_the_webhook(
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    failed = [{"at_s": 0, "status": "Failed"}]
    emu = await start_emulator(invocations=[{"id": i, "timeline": failed} for i in ("m-1", "o-1")])
    state = tmp_path / "state.db"
    store = await SqliteStore.open(state)
    sinks = [
        {"name": "log", "type": "log"},
        {"name": "hook", "type": "webhook", "url": receiver.url + "/hook", "secret": WHSEC},
    ]
    tracked = [
        Tracked(InvocationRef(FN, "m-1"), {"team": "media"}),
        Tracked(InvocationRef(FN, "o-1"), {"team": "ops"}),
    ]
    metrics = Metrics()
    parts = await build(emulator_config(emu.url, state, sinks=sinks), tracked, store=store,
                        session=http_session, clock=SystemClock(), rng=random.Random(1),
                        metrics=metrics)  # fmt: skip
    try:
        now = SystemClock().wall_ms()
        match = RouteMatch(status=["Failed"], labels={"team": "media"})
        held = await parts.silences.add(spec(match, now - 1000, now + HOUR_MS))
        with capture_logs() as logs:
            await parts.scheduler.poll_all()
            await parts.dispatcher.drain()
        changes = rows(
            state,
            "SELECT t.id, t.invocation_key, t.silenced_by, GROUP_CONCAT(o.sink) FROM transitions t "
            "LEFT JOIN outbox o ON o.transition_id = t.id WHERE t.type = ? GROUP BY t.id",
            "invocation.status_changed",
        )
        by_invocation = {key.rsplit("/", 1)[1]: (by, sinks) for _, key, by, sinks in changes}
        assert by_invocation["m-1"] == (held.id, "log")
        assert by_invocation["o-1"][0] == ""
        assert sorted(by_invocation["o-1"][1].split(",")) == ["hook", "log"]
        sent = {body["data"]["invocationId"] for body in receiver.json_bodies()}
        assert sent == {"o-1"}
        logged = {(e["invocation_id"], e["status"]) for e in logs if e["event"] == "transition"}
        assert ("m-1", "Failed") in logged
        page = metrics.exposition().decode()
        silenced = 'fc_watcher_transitions_silenced_total{type="invocation.status_changed"} 1.0'
        assert silenced in page
    finally:
        await parts.store.close()
        for sink in parts.sinks.values():
            await sink.close()


def test_the_silence_metrics_pass_promtool() -> None:
    binary = find_program("promtool", package="prometheus")
    metrics = Metrics()
    metrics.watch_state(SilenceCollector(lambda: 2))
    metrics.transitions_silenced.labels("invocation.status_changed").inc()
    page = metrics.exposition().decode()
    assert "fc_watcher_silences_active 2.0" in page
    assert 'fc_watcher_transitions_silenced_total{type="invocation.event"} 0.0' in page
    checked = subprocess.run(
        [binary, "check", "metrics"], input=page, capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


# -- the HTTP API -----------------------------------------------------------------------------


class Membership:
    """Live tracking's membership, unused here but for its shape."""

    def track(
        self, source: str, items: Iterable[Tracked], snapshots: Mapping[str, Snapshot], **_: Any
    ) -> None: ...

    def untrack(self, source: str, keys: Iterable[str]) -> None: ...


class Running:
    def __init__(self, url: str, silences: ActiveSilences) -> None:
        self.url = url + "/api/v1/silences"
        self.silences = silences


async def _api(tmp_path: Path, token: str | None) -> AsyncIterator[Running]:
    store = await SqliteStore.open(tmp_path / "state.db")
    live = LiveTracking(store, Membership(), poll=lambda: PollSettings())
    silences = ActiveSilences(store, SystemClock(), log_sinks=lambda: ["log"])
    await silences.start()
    api = TrackApi(store, live, SystemClock(), token, silences)
    endpoint = HttpEndpoint(
        "127.0.0.1", 0, metrics=Metrics(), readiness=lambda: None, api=api, max_body_bytes=2048
    )
    await endpoint.start()
    try:
        yield Running(f"http://127.0.0.1:{endpoint.port}", silences)
    finally:
        await endpoint.stop()
        await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _api(tmp_path, TOKEN):
        yield running


async def call(
    method: str, url: str, body: Any = None, *, token: str | None = TOKEN, raw: bytes | None = None
) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text), text
        except ValueError:
            return response.status, text, text


GOOD = {"matchers": {"function": "transcode", "status": "Failed"}, "duration": "2h", "comment": "c"}


async def test_the_api_refuses_without_the_token_and_writes_nothing(api: Running) -> None:
    for token in (None, "tok-wrong-000000000000"):
        for method, url, body in (
            ("GET", api.url, None),
            ("POST", api.url, GOOD),
            ("DELETE", api.url + "/0123456789ab", None),
        ):
            status, answer, text = await call(method, url, body, token=token)
            assert status == 401, (method, token)
            assert "bearer token" in answer["error"]
            assert TOKEN not in text
    assert await api.silences.listed() == []


async def test_without_a_token_configured_the_silences_api_is_off(tmp_path: Path) -> None:
    async for running in _api(tmp_path, None):
        status, answer, _ = await call("POST", running.url, GOOD, token=None)
        assert status == 404
        assert "http.token_file" in answer["error"]
        assert await running.silences.listed() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        ({**GOOD, "matchers": {"fn": "x"}}, "unknown matcher 'fn'"),
        ({**GOOD, "comment": ""}, 'needs "comment"'),
        ({**GOOD, "endsAt": "2030-01-01T00:00:00Z"}, '"endsAt" or "duration", not both'),
        ({"matchers": ["function=x"], "endsAt": "2020-01-01T00:00:00Z", "comment": "c"}, "past"),
        ({**GOOD, "duration": "0s"}, "longer than 0"),
    ],
)
async def test_a_bad_body_is_a_400_with_one_line_naming_the_field(
    api: Running, body: Any, message: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer, _ = await call("POST", api.url, raw=raw)
    assert status == 400
    assert message in answer["error"]
    assert "\n" not in answer["error"]
    assert await api.silences.listed() == []


async def test_an_oversized_body_is_a_413(api: Running) -> None:
    body = {**GOOD, "comment": "x" * 4096}
    status, answer, _ = await call("POST", api.url, body)
    assert status == 413
    assert "http.max_body_bytes (2048)" in answer["error"]
    assert await api.silences.listed() == []


async def test_add_list_and_expire_through_the_api_apply_at_once(api: Running) -> None:
    status, answer, _ = await call("POST", api.url, {**GOOD, "author": "ci"})
    assert status == 201
    created = answer["silence"]
    assert (created["state"], created["author"]) == ("active", "ci")
    assert created["matchers"] == {"function": "transcode", "status": ["Failed"]}
    # In force before any tick: the handler refreshed the daemon's set itself.
    assert [s.id for s in api.silences.held()] == [created["id"]]
    assert api.silences.active_count() == 1

    status, answer, _ = await call("GET", api.url)
    assert status == 200
    assert [s["id"] for s in answer["silences"]] == [created["id"]]

    status, answer, _ = await call("DELETE", api.url + "/0123456789ab")
    assert status == 404
    assert "no silence has id '0123456789ab'" in answer["error"]

    status, answer, _ = await call("DELETE", f"{api.url}/{created['id']}")
    assert (status, answer["expired"], answer["silence"]["state"]) == (200, True, "expired")
    assert api.silences.active_count() == 0
    status, answer, _ = await call("DELETE", f"{api.url}/{created['id']}")
    assert (status, answer["expired"]) == (200, False)

    status, answer, _ = await call("GET", api.url)  # recently ended: still listed
    assert [(s["id"], s["state"]) for s in answer["silences"]] == [(created["id"], "expired")]


# -- beside a running daemon --------------------------------------------------------------------


def _daemon_config(tmp_path: Path, emu_url: str, hook_url: str) -> Path:
    config = {
        "fc": emulator_fc(emu_url),
        "state": {"path": str(tmp_path / "state.db")},
        "poll": {"interval_s": 0.1, "max_interval_s": 0.2, "jitter": 0.1},
        "watch": [
            {
                "service": "demo-service",
                "function": "demo-function",
                "qualifier": "LATEST",
                "invocations": ["a", "b"],
            }
        ],
        "sinks": [
            {"name": "log", "type": "log"},
            {"name": "hook", "type": "webhook", "url": hook_url, "backoff_base_s": 0.05},
        ],
        "routes": [{"sinks": ["hook", "log"]}],
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(config))
    return path


def _received(receiver: Receiver) -> set[tuple[str, str]]:
    return {(b["data"]["invocationId"], b["data"]["status"]) for b in receiver.json_bodies()}


def _silence_logged(log: Path, silence_id: str, state: str) -> bool:
    return any(
        entry.get("event") == "silence_changed"
        and entry.get("silence_id") == silence_id
        and entry.get("state") == state
        for entry in read_log([log])
    )


async def test_beside_a_daemon_a_silence_holds_back_what_it_matches_until_it_is_expired(
    start_emulator: EmulatorFactory, receiver: Receiver, tmp_path: Path
) -> None:
    running = {"at_s": 0, "status": "Running"}
    emu = await start_emulator(
        invocations=[
            {"id": "a", "timeline": [running, {"at_s": 10, "status": "Failed"}]},
            {"id": "b", "timeline": [running, {"at_s": 20, "status": "Failed"}]},
        ]
    )
    config = _daemon_config(tmp_path, emu.url, receiver.url + "/hook")
    state, log, cli_out = tmp_path / "state.db", tmp_path / "run.log", tmp_path / "cli.out"
    process = await run_cli("run", "-c", str(config), stdout=log)
    try:
        both_running = {("a", "Running"), ("b", "Running")}
        await wait_until(lambda: _received(receiver) >= both_running, "both Running delivered")
        code, err = await run_to_end(
            *("silence", "add", "-c", str(config), "-q", "--comment", "re-encode backlog"),
            *("--match", "status=Failed", "--match", "function=demo-*", "--for", "1h"),
            stdout=cli_out,
        )
        assert (code, err) == (0, "")
        silence_id = cli_out.read_text().strip()
        await wait_until(lambda: _silence_logged(log, silence_id, "active"), "silence applied")

        emu.clock.advance(10)  # a fails, under the silence
        await wait_until(lambda: _silenced(state, "a") is not None, "a's Failed committed")
        assert _silenced(state, "a") == silence_id
        assert _sinks_of_failed(state, "a") == ["log"]

        code, err = await run_to_end(
            "silence", "expire", "-c", str(config), silence_id, stdout=cli_out
        )
        assert (code, err) == (0, "")
        assert f"expired silence {silence_id}" in cli_out.read_text()
        await wait_until(lambda: _silence_logged(log, silence_id, "expired"), "expiry applied")

        emu.clock.advance(10)  # b fails after the silence ended: sent
        await wait_until(lambda: ("b", "Failed") in _received(receiver), "b's Failed delivered")
        await wait_until(lambda: pending_outbox(state) == 0, "the outbox drained")
        assert ("a", "Failed") not in _received(receiver)
        assert _silenced(state, "b") == ""
        logged = {(e["invocation_id"], e["status"]) for e in transitions_in(read_log([log]))}
        assert ("a", "Failed") in logged  # the log sink still had it

        code, err = await run_to_end("status", "-c", str(config), stdout=cli_out)
        assert code == 0
        lines = cli_out.read_text().splitlines()
        assert any("/a " in line and "Failed (silenced)" in line for line in lines)
        assert not any("/b " in line and "(silenced)" in line for line in lines)
        cli_out.write_text("")
        code, _ = await run_to_end("status", "-c", str(config), "--json", stdout=cli_out)
        report = json.loads(cli_out.read_text())
        by_id = {row["invocationId"]: row["silencedBy"] for row in report["invocations"]}
        assert (code, by_id) == (0, {"a": silence_id, "b": None})
        assert report["silences"] == []  # expired: no longer in force
    finally:
        assert await stop(process) == 0


def _failed_of(state: Path, invocation_id: str) -> list[tuple[Any, ...]]:
    return rows(
        state,
        "SELECT id, silenced_by FROM transitions WHERE invocation_key LIKE ? AND type = ? "
        "AND json_extract(data, '$.status') = 'Failed'",
        f"%/{invocation_id}",
        "invocation.status_changed",
    )


def _silenced(state: Path, invocation_id: str) -> str | None:
    """The silenced_by of the invocation's Failed status change, or None before it."""
    found = _failed_of(state, invocation_id)
    return str(found[0][1]) if found else None


def _sinks_of_failed(state: Path, invocation_id: str) -> list[str]:
    (transition_id, _), *_ = _failed_of(state, invocation_id)
    return sorted(r[0] for r in rows(state, "SELECT sink FROM outbox WHERE transition_id = ?",
                                     transition_id))  # fmt: skip
