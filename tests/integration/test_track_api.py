"""``POST`` and ``DELETE /api/v1/track`` over real loopback HTTP: off without a token, 401, 400
naming the bad id, 413, what it answers on success, applied at once (before any tick), and a
daemon that polls an id registered through it, rotates its token on SIGHUP and never shows
the token anywhere."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.conftest import EmulatorFactory
from tests.integration.daemon import read_log, run_cli, stop, wait_until, write_config
from watcher.config.models import HttpSettings, Tracked
from watcher.config.models import PollSettings as Poll
from watcher.core.clock import SystemClock
from watcher.core.model import Snapshot
from watcher.daemon.api import TokenError, TrackApi, resolve_token
from watcher.daemon.http import HttpEndpoint
from watcher.daemon.live import LiveTracking
from watcher.store.sqlite import SqliteStore
from watcher.telemetry.metrics import Metrics

TOKEN = "tok-3f9a1c77e2b54d0e9a8b"
ROTATED = "tok-rotated-51c2d4e6f8a0"
WRONG = "tok-wrong-guess-000000"
FC2 = {"service": "media", "function": "transcode"}


class Recorder:
    """The scheduler's membership, as the API sees it: what was tracked and untracked."""

    def __init__(self) -> None:
        self.tracked: dict[str, Tracked] = {}
        self.untracked: list[str] = []

    def track(
        self,
        source: str,
        items: Iterable[Tracked],
        snapshots: Mapping[str, Snapshot],
        *,
        spread: bool = True,
    ) -> None:
        assert source == "live"
        self.tracked.update((item.ref.key, item) for item in items)

    def untrack(self, source: str, keys: Iterable[str]) -> None:
        self.untracked.extend(keys)


class Api:
    """An endpoint with the track API on a real store, its URL and what it applied."""

    def __init__(self, url: str, store: SqliteStore, membership: Recorder) -> None:
        self.url = url + "/api/v1/track"
        self.base = url
        self.store = store
        self.membership = membership


async def _api(tmp_path: Path, token: str | None) -> AsyncIterator[Api]:
    store = await SqliteStore.open(tmp_path / "state.db")
    membership = Recorder()
    live = LiveTracking(store, membership, poll=lambda: Poll(stuck_after_s=60))
    await live.start()
    api = TrackApi(store, live, SystemClock(), token)
    endpoint = HttpEndpoint(
        "127.0.0.1", 0, metrics=Metrics(), readiness=lambda: None, api=api, max_body_bytes=2048
    )
    await endpoint.start()
    try:
        yield Api(f"http://127.0.0.1:{endpoint.port}", store, membership)
    finally:
        await endpoint.stop()
        await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for running in _api(tmp_path, TOKEN):
        yield running


async def _call(
    method: str, url: str, body: Any = None, *, token: str | None = TOKEN, raw: bytes | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = raw if raw is not None else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def _live_ids(store: SqliteStore) -> list[str]:
    return sorted(change.ref.invocation_id for change in (await store.live_changes(0))[1])


async def test_without_a_token_the_api_is_off(tmp_path: Path) -> None:
    """No token configured: 404, nothing written; health answers as before."""
    async for running in _api(tmp_path, None):
        status, body = await _call("POST", running.url, {**FC2, "invocationIds": ["a-1"]})
        assert status == 404
        assert "http.token_file" in body["error"]
        assert (await _call("GET", running.base + "/healthz", token=None))[0] == 200
        assert await _live_ids(running.store) == []


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {WRONG}", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
    ids=["none", "wrong", "not-bearer", "longer", "empty"],
)
async def test_a_missing_or_wrong_token_is_401_and_writes_nothing(
    api: Api, authorization: str | None
) -> None:
    """401 with a WWW-Authenticate challenge; the body is not even looked at."""
    headers = {"Authorization": authorization} if authorization else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url, json={**FC2, "invocationIds": ["a-1"]}, headers=headers) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "bearer token" in (await response.json())["error"]
    assert await _live_ids(api.store) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**FC2, "invocationIds": ["ok-1", "bad id!"]}, "invalid invocation id 'bad id!'"),
        ({**FC2, "invocationIds": ["ok-1", "../../etc"]}, "'../../etc'"),
        ({**FC2, "invocationIds": []}, '"invocationIds"'),
        ({**FC2}, '"invocationIds"'),
        ({"function": "transcode", "invocationIds": ["a"]}, 'needs "service"'),
        ({"api": "fc3", **FC2, "invocationIds": ["a"]}, 'remove "service"'),
        ({"api": "fc4", "function": "f", "invocationIds": ["a"]}, "fc2 or fc3"),
        ({"service": "media", "invocationIds": ["a"]}, '"function" is required'),
        ({**FC2, "qualifier": "a b", "invocationIds": ["a"]}, "invalid qualifier 'a b'"),
        ({**FC2, "invocationIds": ["a"], "labels": {"team": 1}}, '"labels"'),
        (["a"], "JSON object"),
    ],
)
async def test_a_bad_request_is_400_with_one_line_naming_it(
    api: Api, body: Any, message: str
) -> None:
    """One JSON message naming the field or the id; nothing written, nothing applied."""
    status, answer = await _call("POST", api.url, body)
    assert status == 400
    assert message in answer["error"]
    assert "\n" not in answer["error"]
    assert await _live_ids(api.store) == []
    assert api.membership.tracked == {}


async def test_bad_json_is_400(api: Api) -> None:
    """A body that is not JSON at all: one message, as for any other bad request."""
    status, answer = await _call("POST", api.url, raw=b"{not json")
    assert (status, answer) == (400, {"error": "the body is not JSON; send a JSON object"})


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    """``http.max_body_bytes`` (2048 here): refused, named, nothing written."""
    ids = [f"id-{n:04d}" for n in range(400)]
    status, answer = await _call("POST", api.url, {**FC2, "invocationIds": ids})
    assert status == 413
    assert "http.max_body_bytes (2048)" in answer["error"]
    assert await _live_ids(api.store) == []


async def test_track_and_untrack_are_written_and_applied_at_once(api: Api) -> None:
    """201 with counts, 200 when nothing was new; the scheduler has the ids when the answer
    comes (no tick ran: ``LiveTracking.run`` was never started), with labels and the poll
    settings' stuck limit; DELETE takes them back the same way."""
    request = {**FC2, "qualifier": "LATEST", "labels": {"team": "media"}}
    status, answer = await _call("POST", api.url, {**request, "invocationIds": ["a-1", "a-2"]})
    assert (status, answer) == (201, {"tracked": 2, "alreadyTracked": 0})
    assert sorted(api.membership.tracked) == [
        "fc2/media/transcode/LATEST/a-1",
        "fc2/media/transcode/LATEST/a-2",
    ]
    item = api.membership.tracked["fc2/media/transcode/LATEST/a-1"]
    assert (item.labels, item.stuck_after_s) == ({"team": "media"}, 60)
    status, answer = await _call("POST", api.url, {**request, "invocationIds": ["a-2", "a-2"]})
    assert (status, answer) == (200, {"tracked": 0, "alreadyTracked": 1})
    status, answer = await _call("DELETE", api.url, {**request, "invocationIds": ["a-1", "zz"]})
    assert (status, answer) == (200, {"untracked": 1, "notTracked": 1})
    assert api.membership.untracked == ["fc2/media/transcode/LATEST/a-1"]
    assert await _live_ids(api.store) == ["a-2"]
    fc3 = {"api": "fc3", "function": "render", "invocationIds": ["t-1"]}
    assert await _call("POST", api.url, fc3) == (201, {"tracked": 1, "alreadyTracked": 0})
    assert "fc3//render//t-1" in api.membership.tracked


async def test_the_token_never_shows_in_logs_answers_reprs_or_metrics(api: Api) -> None:
    """Neither the configured token nor a wrong one a client sent is logged, answered, shown
    in a repr or exposed as a metric."""
    with capture_logs() as logs:
        await _call("POST", api.url, {**FC2, "invocationIds": ["a-1"]}, token=WRONG)
        await _call("POST", api.url, {**FC2, "invocationIds": ["bad id"]})
        answers = [await _call("POST", api.url, {**FC2, "invocationIds": ["a-1"]})]
    async with (
        aiohttp.ClientSession() as session,
        session.get(api.base + "/metrics") as response,
    ):
        metrics = await response.text()
    shown = json.dumps([logs, answers], default=repr) + metrics + repr(api.store)
    assert any(entry["event"] == "api_unauthorized" for entry in logs)
    for secret in (TOKEN, WRONG):
        assert secret not in shown
    settings = HttpSettings.model_validate({"token": TOKEN})
    assert TOKEN not in repr(settings) + str(settings)
    assert TOKEN not in repr(TrackApi(api.store, None, SystemClock(), TOKEN))  # type: ignore[arg-type]


def test_a_token_file_is_read_stripped_and_a_bad_one_named(tmp_path: Path) -> None:
    """Whitespace around the token goes; an empty or unreadable file is one line naming it."""
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    assert resolve_token(HttpSettings(token_file=token_file)) == TOKEN
    token_file.write_text("\n")
    with pytest.raises(TokenError, match="is empty") as caught:
        resolve_token(HttpSettings(token_file=token_file))
    assert str(token_file) in str(caught.value)
    with pytest.raises(TokenError, match=r"cannot read http\.token_file"):
        resolve_token(HttpSettings(token_file=tmp_path / "missing"))
    assert resolve_token(HttpSettings(token=" ")) is None  # ${VAR:-}: not given


# -- a daemon, end to end ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_api(config: Path, port: int) -> None:
    document = json.loads(config.read_text())
    document["http"] = {"listen": f"127.0.0.1:{port}", "token_file": "api.token"}
    config.write_text(json.dumps(document))


async def _ready(url: str) -> bool:
    try:
        return (await _call("GET", url + "/healthz", token=None))[0] == 200
    except aiohttp.ClientError:
        return False


async def test_a_daemon_polls_an_id_posted_to_it_and_rotates_its_token(
    start_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """POST, and the daemon polls the id; DELETE, and it stops; a new token file and SIGHUP,
    and only the new token works. The token is nowhere in the daemon's output or state DB."""
    running = [{"at_s": 0, "status": "Running"}]
    emu = await start_emulator(
        invocations=[{"id": name, "timeline": running} for name in ("cfg-1", "live-1")]
    )
    config = write_config(tmp_path, emu.url, ["cfg-1"])
    port = _free_port()
    _with_api(config, port)
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    base, log = f"http://127.0.0.1:{port}", tmp_path / "run.log"
    url = base + "/api/v1/track"
    body = {"service": "demo-service", "function": "demo-function", "qualifier": "LATEST"}
    process = await run_cli("run", "-c", str(config), stdout=log)
    try:
        for _ in range(500):
            if await _ready(base):
                break
            await asyncio.sleep(0.02)
        assert await _call("POST", url, {**body, "invocationIds": ["live-1"]}, token=WRONG) == (
            401,
            {"error": "missing or wrong bearer token (Authorization: Bearer ...)"},
        )
        answer = await _call("POST", url, {**body, "invocationIds": ["live-1"]})
        assert answer == (201, {"tracked": 1, "alreadyTracked": 0})
        await wait_until(lambda: emu.stats.get("requests:live-1", 0) > 2, "live-1 polled")
        answer = await _call("DELETE", url, {**body, "invocationIds": ["live-1"]})
        assert answer == (200, {"untracked": 1, "notTracked": 0})
        (tmp_path / "api.token").write_text(ROTATED)
        process.send_signal(signal.SIGHUP)
        await wait_until(
            lambda: any(e["event"] == "config_reloaded" for e in read_log([log])), "reload"
        )
        assert (await _call("POST", url, {**body, "invocationIds": ["x"]}))[0] == 401
        rotated = await _call("POST", url, {**body, "invocationIds": ["x"]}, token=ROTATED)
        assert rotated == (201, {"tracked": 1, "alreadyTracked": 0})
        metrics = (await _call("GET", base + "/metrics", token=None))[1]
    finally:
        assert await stop(process) == 0
    assert process.stderr is not None
    output = log.read_text() + (await process.stderr.read()).decode() + metrics
    for state in tmp_path.glob("state.db*"):
        output += state.read_bytes().decode("latin-1")
    for secret in (TOKEN, ROTATED, WRONG):
        assert secret not in output
    changes = [e for e in read_log([log]) if e["event"] == "live_tracked"]
    assert [(e["added"], e["removed"]) for e in changes] == [(1, 0), (0, 1), (1, 0)]
    assert not any(e["event"] == "reload_ignored" for e in read_log([log]))
