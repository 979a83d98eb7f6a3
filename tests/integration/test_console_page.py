"""The status page (``watcher.daemon.console``) on real state DBs, over a real loopback port:
what each page shows, the filters kept in the URL, the live fragment following commits,
hostile text escaped on every page, the guards on the write actions, the query plans, and
(slow) the page timings at 100,000 invocations.

The helpers here (state builders, a served console, the daemon's actions) are shared with the
browser test, ``test_console_browser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from watcher.core import decide
from watcher.core.clock import SystemClock
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Snapshot, Transition, TransitionType
from watcher.core.route import FAILURE_STATUSES, RouteMatch, Target
from watcher.core.silence import SilenceSpec
from watcher.daemon.console import Console, DaemonActions, add_console_routes
from watcher.daemon.console.reader import ConsoleReader
from watcher.daemon.silences import ActiveSilences
from watcher.store.records import SinkHealthRecord
from watcher.store.sqlite import SqliteStore

TOKEN = "console-test-token-0123456789"
HOSTILE = '<script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2">\'`'
FN = FunctionRef(Api.FC2, "transcode", "media", "LATEST")
MINUTE_MS = 60_000


def wall_ms() -> int:
    return int(time.time() * 1000)


def page_url(key: str) -> str:
    return "/invocations/" + quote(key, safe="")


def fc_body(
    status: str,
    *,
    events: Sequence[Mapping[str, Any]] = (),
    error: str = "",
    retries: int = 0,
    payload: str = "",
    started_ms: int = 0,
) -> Invocation:
    """An FC 2.0 GetStatefulAsyncInvocation body."""
    return Invocation.model_validate(
        {
            "status": status,
            "events": list(events),
            "invocationErrorMessage": error,
            "alreadyRetriedTimes": retries,
            "invocationPayload": payload,
            "startedTime": started_ms,
        }
    )


def fc_event(event_id: int, status: str, at_ms: int, detail: str = "") -> dict[str, Any]:
    return {"eventId": event_id, "status": status, "timestamp": at_ms, "eventDetail": detail}


def alert_routes(
    transitions: Sequence[Transition], alert_sinks: Sequence[str] = ("hook",)
) -> dict[str, list[Target]]:
    """Every transition to ``log``; failures also to ``alert_sinks`` (as the default routes
    do)."""
    routes: dict[str, list[Target]] = {}
    for transition in transitions:
        targets = [Target("log")]
        bad = transition.type is TransitionType.STATUS_CHANGED
        if bad and transition.status in FAILURE_STATUSES:
            targets += [Target(sink, "critical") for sink in alert_sinks]
        routes[transition.id] = targets
    return routes


async def record(
    store: SqliteStore,
    ref: InvocationRef,
    polls: Sequence[tuple[int, Invocation]],
    *,
    labels: Mapping[str, str] | None = None,
    previous: Snapshot | None = None,
    alert_sinks: Sequence[str] = ("hook",),
) -> Snapshot:
    """Commit what the watcher would for each poll (observed at its time); the last snapshot."""
    snapshot = previous
    for observed_ms, body in polls:
        result = decide.diff(snapshot, body, ref=ref, observed_ms=observed_ms, labels=labels)
        routes = alert_routes(result.transitions, alert_sinks)
        await store.commit(
            ref, result.snapshot, transitions=result.transitions, routes=routes, now_ms=observed_ms
        )
        snapshot = result.snapshot
    assert snapshot is not None, "no polls"
    return snapshot


def failed_polls(
    start_ms: int, *, error: str, detail: str = "", payload: str = ""
) -> list[tuple[int, Invocation]]:
    """Enqueued, Running, Retrying, then Failed after 2 retries, with FC's events."""
    events = [fc_event(1, "Enqueued", start_ms), fc_event(2, "Started", start_ms + 1000)]
    retry = [*events, fc_event(3, "Retrying", start_ms + 30_000, detail)]
    final = [*retry, fc_event(4, "Failed", start_ms + 60_000, detail)]
    kwargs: dict[str, Any] = {"payload": payload, "started_ms": start_ms}
    return [
        (start_ms, fc_body("Enqueued", events=events[:1], **kwargs)),
        (start_ms + 1000, fc_body("Running", events=events, **kwargs)),
        (start_ms + 30_000, fc_body("Retrying", events=retry, retries=1, **kwargs)),
        (start_ms + 60_000, fc_body("Failed", events=final, retries=2, error=error, **kwargs)),
    ]


def succeeded_polls(start_ms: int, *, payload: str = "") -> list[tuple[int, Invocation]]:
    events = [fc_event(1, "Enqueued", start_ms), fc_event(2, "Started", start_ms + 1000)]
    done = [*events, fc_event(3, "Succeeded", start_ms + 20_000)]
    return [
        (start_ms, fc_body("Running", events=events, payload=payload, started_ms=start_ms)),
        (start_ms + 20_000, fc_body("Succeeded", events=done, started_ms=start_ms)),
    ]


async def settle_outbox(
    store: SqliteStore,
    now_ms: int,
    *,
    dead: str = "",
    retrying: str = "",
    error: str = "",
    held: Sequence[str] = ("ding", "dingtalk"),
) -> None:
    """Leave the outbox as a run would: every pending row sent, but the ``dead`` sink's rows
    dead-lettered, the ``retrying`` sink's waiting to retry and the ``held`` sinks' (their
    circuit open) still pending."""
    for sink in ("log", "hook", "ding", "webhook", "dingtalk"):
        seqs = [row.seq for row in await store.pending(sink, 10_000)]
        if sink == dead:
            await store.mark_dead(seqs, now_ms, error)
        elif sink == retrying:
            await store.mark_retry(seqs, now_ms + 60_000, error)
        elif sink not in held:
            await store.mark_sent(seqs, now_ms)


def daemon_actions(store: SqliteStore) -> DaemonActions:
    """The actions a daemon gives the console: its silences, its store's ``redeliver``."""
    clock = SystemClock()
    return DaemonActions(ActiveSilences(store, clock, log_sinks=lambda: ["log"]), store, clock)


async def add_silence(
    store: SqliteStore,
    matchers: Mapping[str, Any],
    *,
    starts_ms: int,
    ends_ms: int,
    expired_ms: int = 0,
    comment: str = "",
) -> str:
    """A silence recorded through the store, as ``fc-watcher silence add`` would (any times,
    past ones included); expired at ``expired_ms`` if given. Its id."""
    spec = SilenceSpec(RouteMatch.model_validate(matchers), starts_ms, ends_ms, comment, "ops")
    silence = await store.add_silence(spec, starts_ms)
    if expired_ms:
        await store.expire_silence(silence.id, expired_ms)
    return silence.id


@dataclass
class Served:
    """A console served on a loopback port."""

    console: Console
    url: str


@contextlib.asynccontextmanager
async def serve_console(path: Path, **options: Any) -> AsyncIterator[Served]:
    """Serve ``Console(path, **options)`` on 127.0.0.1 as the daemon's endpoint would."""
    console = Console(path, **options)
    app = web.Application()
    add_console_routes(app, console)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Served(console, f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()
        await console.close()


async def get(session: aiohttp.ClientSession, url: str, status: int = 200) -> str:
    async with session.get(url, allow_redirects=False) as response:
        body = await response.text()
        assert response.status == status, body[:500]
        return body


def visible(page: str) -> str:
    """The page's text as a person reads it: tags dropped, entities decoded, spaces folded."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state.db")
    yield opened
    await opened.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe: the cookie jar keeps cookies of an IP address host (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as opened:
        yield opened


async def overview_state(store: SqliteStore, now_ms: int) -> None:
    """Two failures, three successes, one running; ``hook`` has a dead letter and a row
    waiting to retry, ``ding``'s circuit is open with a backlog, ``log`` is fine."""
    for n in range(3):
        await record(store, InvocationRef(FN, f"ok-{n}"), succeeded_polls(now_ms - 3_600_000))
    first = failed_polls(now_ms - 7_200_000, error="boom one")
    await record(store, InvocationRef(FN, "job-f1"), first)
    await settle_outbox(store, now_ms, dead="hook", error="HTTP 410 from receiver")
    second = failed_polls(now_ms - 600_000, error="boom two")
    await record(store, InvocationRef(FN, "job-f2"), second, alert_sinks=("hook", "ding"))
    await settle_outbox(store, now_ms, retrying="hook", error="HTTP 503 from receiver")
    running = [(now_ms - 120_000, fc_body("Running", events=[fc_event(1, "Started", now_ms)]))]
    await record(store, InvocationRef(FN, "job-r1"), running)
    outage = SinkHealthRecord("ding", False, now_ms - 300_000, now_ms - 400_000, "refused")
    await store.save_sink_health(outage)


async def test_overview_shows_counts_failures_chart_and_sinks(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """Counts link to their filtered lists, the last day's failures link to their pages with
    error and retries, the chart counts the transitions, and each sink's state and backlog
    is as the outbox and sink health say, each count linking to its list."""
    now = wall_ms()
    await overview_state(store, now)
    async with serve_console(store.path) as served:
        page = await get(session, served.url + "/")
        dead = await get(session, served.url + "/outbox?sink=hook&state=dead")
    counts = dict(
        re.findall(r'href="/invocations\?status=(\w+)">\s*<span class="count">(\d+)<', page)
    )
    assert counts == {"Failed": "2", "Running": "1", "Succeeded": "3"}
    failures = page.split('id="failures"')[1].split("</table>")[0]
    assert page_url(InvocationRef(FN, "job-f1").key) in failures
    assert page_url(InvocationRef(FN, "job-f2").key) in failures
    assert "boom one" in failures
    assert "boom two" in failures
    assert re.search(r'<td class="num">2</td>', failures)  # retries
    changed = len([t for t in await store.transitions() if t.type.value.endswith("changed")])
    assert f"<title>invocation.status_changed: {changed}</title>" in page
    sinks = visible(page.split('id="sinks"')[1].split("</table>")[0])
    assert re.search(r"ding circuit open .* refused", sinks)
    assert " hook backing off " in sinks
    assert " log up " in sinks
    assert 'href="/outbox?sink=hook&amp;state=dead">1<' in page
    assert 'href="/outbox?sink=ding&amp;state=pending">1<' in page
    assert "HTTP 410 from receiver" in dead
    assert page_url(InvocationRef(FN, "job-f1").key) in dead


async def test_invocation_list_filters_pages_and_keeps_filters_in_links(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """50 a page, newest change first; function, status and since filter; the pager's links
    keep the filters; a bad filter is a 400 that says what it takes."""
    now = wall_ms()
    other = FunctionRef(Api.FC2, "thumbnail", "media", "LATEST")
    for n in range(120):
        fn = FN if n % 2 else other
        polls = [(now - n * MINUTE_MS, fc_body("Failed" if n % 3 == 0 else "Succeeded"))]
        await record(store, InvocationRef(fn, f"inv-{n:03d}"), polls)
    async with serve_console(store.path) as served:
        first = await get(session, served.url + "/invocations")
        failed = await get(session, served.url + "/invocations?function=transcode&status=Failed")
        second = await get(session, served.url + "/invocations?page=2")
        recent = await get(session, served.url + "/invocations?since=30m")
        bad = await get(session, served.url + "/invocations?since=yesterday", 400)
        await get(session, served.url + "/invocations?page=0", 400)
    ids = re.findall(r'href="/invocations/[^"]+">(inv-\d+)<', first)
    assert ids == [f"inv-{n:03d}" for n in range(50)]
    assert 'rel="next" href="/invocations?page=2"' in first
    assert re.findall(r">(inv-\d+)<", second) == [f"inv-{n:03d}" for n in range(50, 100)]
    expected = [f"inv-{n:03d}" for n in range(120) if n % 2 and n % 3 == 0]
    assert re.findall(r">(inv-\d+)<", failed) == expected
    assert f"{len(expected)} matches" in visible(failed)
    assert re.findall(r">(inv-\d+)<", recent) == [f"inv-{n:03d}" for n in range(30)]
    assert "&#39;yesterday&#39; is neither a duration" in bad


async def test_pager_links_keep_the_filters(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """Page 2 of a filtered view links back and on with the same filters."""
    now = wall_ms()
    for n in range(130):
        await record(store, InvocationRef(FN, f"f-{n:03d}"), [(now - n * 1000, fc_body("Failed"))])
    async with serve_console(store.path) as served:
        page = await get(session, served.url + "/invocations?status=Failed&since=1d&page=2")
    assert 'rel="prev" href="/invocations?status=Failed&amp;since=1d"' in page
    assert 'rel="next" href="/invocations?status=Failed&amp;since=1d&amp;page=3"' in page
    assert 'value="1d"' in page
    assert '<option value="Failed" selected>' in page


async def test_invocation_page_shows_the_timeline_and_every_delivery(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """Status changes and events with their details in commit order, and for each transition
    its deliveries: sink, state, attempts, last error. An unknown key is a 404."""
    now = wall_ms()
    ref = InvocationRef(FN, "job-1")
    polls = failed_polls(now - 120_000, error="disk full", detail='{"attempt": 2}', payload="p1")
    await record(store, ref, polls)
    await settle_outbox(store, now, dead="hook", error="HTTP 410 Gone")
    async with serve_console(store.path) as served:
        page = await get(session, served.url + page_url(ref.key))
        await get(session, served.url + page_url(ref.key + "x"), 404)
    text = visible(page.split('id="timeline"')[1])
    steps = re.findall(r"invocation\.(status_changed|event) (event \d+: \w+|\S+ → \w+)", text)
    assert steps == [
        ("event", "event 1: Enqueued"),
        ("status_changed", "(none) → Enqueued"),
        ("event", "event 2: Started"),
        ("status_changed", "Enqueued → Running"),
        ("event", "event 3: Retrying"),
        ("status_changed", "Running → Retrying"),
        ("event", "event 4: Failed"),
        ("status_changed", "Retrying → Failed"),
    ]
    assert '{"attempt": 2}' in text
    assert re.search(r"hook dead 1 .* HTTP 410 Gone", text)
    assert text.count(" log sent 1 ") == 8
    assert "disk full" in visible(page.split('id="error"')[1])


async def test_the_live_fragment_follows_new_commits(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """``?fragment=1`` is the page's live region alone, and the next one has what was
    committed since: a new event on the invocation page, one more in the chart's count."""
    now = wall_ms()
    ref = InvocationRef(FN, "job-live")
    polls = succeeded_polls(now - 60_000)
    snapshot = await record(store, ref, polls[:1])
    async with serve_console(store.path) as served:
        whole = await get(session, served.url + page_url(ref.key))
        source = re.findall(r'<div id="live" data-src="([^"]+)"', whole)
        assert source == [html.escape(page_url(ref.key) + "?fragment=1")]
        before = await get(session, served.url + html.unescape(source[0]))
        chart_before = await get(session, served.url + "/?fragment=1")
        await record(store, ref, polls[1:], previous=snapshot)
        after = await get(session, served.url + page_url(ref.key) + "?fragment=1")
        chart_after = await get(session, served.url + "/?fragment=1")
    assert "<html" not in before
    assert 'id="timeline"' in before
    assert "Running → Succeeded" not in visible(before)
    assert "Running → Succeeded" in visible(after)
    assert "<title>invocation.status_changed: 1</title>" in chart_before
    assert "<title>invocation.status_changed: 2</title>" in chart_after


async def test_pages_send_a_strict_content_security_policy(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """No inline script may run even if one slipped in; the script and style are served."""
    async with serve_console(store.path) as served:
        async with session.get(served.url + "/") as response:
            policy = response.headers["Content-Security-Policy"]
        async with session.get(served.url + "/static/console.js") as script:
            assert script.content_type == "text/javascript"
            assert "replaceChildren" in await script.text()
        await get(session, served.url + "/static/other.js", 404)
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy


async def post(
    session: aiohttp.ClientSession,
    url: str,
    form: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """POST a form; (status, Location)."""
    async with session.post(url, data=dict(form), headers=headers, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", "")


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match is not None, "no CSRF token on the page"
    return match[1]


async def sign_in(session: aiohttp.ClientSession, url: str) -> str:
    """Sign in with the token; the CSRF token of the session."""
    status, location = await post(session, url + "/login", {"token": TOKEN, "next": "/silences"})
    assert (status, location) == (303, "/silences")
    return csrf_of(await get(session, url + "/silences"))


def silence_rows(path: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return list(db.execute("SELECT matchers, comment, expired_ms FROM silences"))


async def test_hostile_text_is_escaped_on_every_page(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """``<script>`` and quotes in every field FC or a function fills (error, event detail,
    payload, labels, an unknown status, names as a foreign DB may hold them), in what
    receivers answered and in silences: every page shows them as text, none as markup,
    reflected query parameters included."""
    now = wall_ms()
    ref = InvocationRef(FN, "job-evil")
    polls = failed_polls(now - 60_000, error=HOSTILE, detail=HOSTILE, payload=HOSTILE)
    await record(store, ref, polls, labels={HOSTILE: HOSTILE})
    odd = [(now - 30_000, fc_body(HOSTILE, error=HOSTILE))]  # FC's unknown statuses are kept
    await record(store, InvocationRef(FN, "job-odd"), odd)
    await settle_outbox(store, now, dead="hook", error=HOSTILE)
    await store.save_sink_health(SinkHealthRecord("hook", False, now - 1000, now - 2000, HOSTILE))
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        # Names the watcher refuses at the door, as a foreign or damaged DB might hold them.
        db.execute(
            "UPDATE invocations SET service = ?, function = ?, qualifier = ? WHERE key = ?",
            (HOSTILE, HOSTILE, HOSTILE, ref.key),
        )
        db.execute(
            "UPDATE transitions SET data = json_set(data, '$.function', ?) "
            "WHERE invocation_key = ?",
            (HOSTILE, ref.key),
        )
        db.executemany(  # rows no watcher wrote: shown as far as they go, never a 500
            "INSERT INTO transitions (id, invocation_key, type, observed_ms, data) "
            "VALUES (?, ?, 'invocation.event', ?, ?)",
            [("tr_x1", ref.key, now, "not json"), ("tr_x2", ref.key, now, '{"event": {}}')],
        )
    matchers = {"function": HOSTILE, "labels": {HOSTILE: HOSTILE}}
    await add_silence(store, matchers, starts_ms=now - 1000, ends_ms=now + 60_000, comment=HOSTILE)
    hostile = quote(HOSTILE)
    paths = ["/", "/?fragment=1", "/invocations", f"/invocations?function={hostile}"]
    paths += [
        f"/invocations?status={hostile}",
        page_url(ref.key),
        page_url(ref.key) + "?fragment=1",
    ]
    paths += ["/outbox?sink=hook&state=dead", f"/outbox?sink={hostile}", "/silences"]
    paths += [f"/login?next={hostile}"]
    async with serve_console(store.path, token=TOKEN, actions=daemon_actions(store)) as served:
        await sign_in(session, served.url)
        pages = {path: await get(session, served.url + path) for path in paths}
        pages["bad since"] = await get(session, f"{served.url}/invocations?since={hostile}", 400)
    for path, page in pages.items():
        scripts = re.findall(r"<script[^>]*>", page)
        assert scripts in ([], ['<script src="/static/console.js" defer>']), path
        assert "<img" not in page, path
        assert 'onerror="' not in page, path
    shown = "&lt;script&gt;window.__pwned=1&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=&#34;"
    for path in ["/", page_url(ref.key), "/outbox?sink=hook&state=dead", "/silences"]:
        assert shown in pages[path], path
    assert HOSTILE in visible(pages[page_url(ref.key)])  # shown as the text it is


async def test_actions_need_the_token_a_session_the_csrf_token_and_this_origin(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """A silence is added only by a signed-in session with the page's CSRF token from this
    origin, or by a script with the bearer token; expire and redeliver likewise; a redirect
    never leaves the console."""
    now = wall_ms()
    await record(store, InvocationRef(FN, "job-1"), failed_polls(now - 60_000, error="x"))
    await settle_outbox(store, now, dead="hook", error="HTTP 410")
    (letter,) = await store.dead_letters()
    form = {"function": "transcode*", "status": "Failed", "ends": "2h", "comment": "deploy"}
    form["author"] = "ana"
    async with serve_console(store.path, token=TOKEN, actions=daemon_actions(store)) as served:
        url = served.url
        assert (await post(session, url + "/silences", form))[0] == 401
        assert (await post(session, url + "/login", {"token": "wrong"}))[0] == 401
        csrf = await sign_in(session, url)
        assert (await post(session, url + "/silences", form))[0] == 403
        assert (await post(session, url + "/silences", {**form, "csrf": "0" * 64}))[0] == 403
        signed = {**form, "csrf": csrf}
        evil = {"Origin": "http://evil.example"}
        assert (await post(session, url + "/silences", signed, evil))[0] == 403
        cross = {"Sec-Fetch-Site": "cross-site"}
        assert (await post(session, url + "/silences", signed, cross))[0] == 403
        assert silence_rows(store.path) == []
        assert await post(session, url + "/silences", signed, {"Origin": url}) == (303, "/silences")
        ((matchers, comment, expired_ms),) = silence_rows(store.path)
        assert (json.loads(matchers), comment, expired_ms) == (
            {"function": "transcode*", "status": ["Failed"]},
            "deploy",
            0,
        )
        active = (
            (await get(session, url + "/silences")).split('id="active"')[1].split("</table>")[0]
        )
        assert "function=transcode*" in active
        silence_id = re.findall(r'action="/silences/([0-9a-f]+)/expire"', active)[0]
        assert (await post(session, f"{url}/silences/{silence_id}/expire", {"csrf": csrf}))[
            0
        ] == 303
        assert silence_rows(store.path)[0][2] > 0
        redeliver = {"csrf": csrf, "transition_id": letter.transition_id, "sink": "hook"}
        redeliver["next"] = "//evil.example/"
        assert await post(session, url + "/outbox/redeliver", redeliver) == (303, "/")
        assert "dead" not in await store.outbox_counts()
        async with aiohttp.ClientSession() as script:
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await post(script, url + "/silences", form, bearer))[0] == 303
            wrong = {"Authorization": "Bearer nope"}
            assert (await post(script, url + "/silences", form, wrong))[0] == 401
        assert (await post(session, url + "/logout", {}))[0] == 303
        assert (await post(session, url + "/silences", signed))[0] == 401
    assert len(silence_rows(store.path)) == 2


async def test_without_a_token_or_without_actions_the_page_is_read_only(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """No token: no sign-in, no forms, and every action refused; no actions: the same, even
    with the right bearer token."""
    now = wall_ms()
    ref = InvocationRef(FN, "job-1")
    await record(store, ref, failed_polls(now - 60_000, error="x"))
    await settle_outbox(store, now, dead="hook", error="HTTP 410")
    form = {"function": "f", "ends": "1h", "comment": "c", "author": "a"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with serve_console(store.path, token=None, actions=daemon_actions(store)) as served:
        invocation = await get(session, served.url + page_url(ref.key))
        silences = await get(session, served.url + "/silences")
        assert (await post(session, served.url + "/login", {"token": TOKEN}))[0] == 403
        assert (await post(session, served.url + "/silences", form, bearer))[0] == 403
    async with serve_console(store.path, token=TOKEN, actions=None) as served:
        assert (await post(session, served.url + "/silences", form, bearer))[0] == 404
        assert "Sign in" not in await get(session, served.url + "/")
    assert "dead" in visible(invocation)
    assert "Redeliver" not in invocation
    assert 'id="add-silence"' not in silences
    assert "read-only" in visible(silences)
    assert silence_rows(store.path) == []


async def test_silences_lists_active_upcoming_and_recently_ended(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """Active, starting later, and ended in the last week (expired early included); one that
    ended weeks ago is not listed."""
    now, day = wall_ms(), 86_400_000

    async def silence(name: str, starts_ms: int, ends_ms: int, expired_ms: int = 0) -> None:
        await add_silence(
            store,
            {"function": "f"},
            starts_ms=starts_ms,
            ends_ms=ends_ms,
            expired_ms=expired_ms,
            comment=f"comment of {name}",
        )

    await silence("s-active", now - day, now + day)
    await silence("s-later", now + day, now + 2 * day)
    await silence("s-ended", now - 3 * day, now - day)
    await silence("s-cut", now - day, now + day, expired_ms=now - 1)
    await silence("s-old", now - 30 * day, now - 9 * day)
    async with serve_console(store.path) as served:
        page = await get(session, served.url + "/silences")

    def section(name: str) -> str:
        return visible(page.split(f'id="{name}"')[1].split("</table>")[0])

    assert re.findall(r"comment of (s-\w+)", section("active")) == ["s-active"]
    assert re.findall(r"comment of (s-\w+)", section("pending")) == ["s-later"]
    assert re.findall(r"comment of (s-\w+)", section("ended")) == ["s-cut", "s-ended"]
    assert "(expired early)" in section("ended")
    assert "s-old" not in page


def _all_page_reads(db: sqlite3.Connection, now_ms: int, key: str) -> None:
    """Every read each page makes, with each filter the list takes."""
    from watcher.daemon.console import views
    from watcher.daemon.console.minutes import MinuteCounts
    from watcher.daemon.console.params import list_query

    views.overview(db, now_ms=now_ms, hours=6, minutes=MinuteCounts())
    filters: list[dict[str, str]] = [{}, {"status": "Failed"}, {"status": "(none)"}]
    filters += [{"function": "transcode", "since": "7d"}, {"since": "2d", "page": "3"}]
    filters += [{"function": "transcode", "status": "Failed"}]
    for query in filters:
        views.invocation_list(db, query=list_query(query, now_ms))
    views.invocation(db, key=key)
    for state in views.OUTBOX_STATES:
        views.outbox(db, sink="hook", state=state, page=2)
    views.silences(db, now_ms=now_ms)


def query_plans(path: Path, now_ms: int, key: str) -> dict[str, list[str]]:
    """Each statement the pages run, with its ``EXPLAIN QUERY PLAN`` lines."""
    statements: list[str] = []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        db.set_trace_callback(statements.append)
        _all_page_reads(db, now_ms, key)
        db.set_trace_callback(None)
        return {
            sql: [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
            for sql in dict.fromkeys(statements)
        }


def assert_indexed(plans: Mapping[str, list[str]]) -> None:
    """No statement walks a big table row by row, or sorts a page's rows; and each of the
    indexes meant for the page (schema version 8) is used."""
    for sql, lines in plans.items():
        for line in lines:
            assert not re.fullmatch(r"SCAN (invocations|transitions|outbox|silences|o|t)", line), (
                sql
            )
            assert "TEMP B-TREE FOR ORDER BY" not in line, sql
    used = " ".join(line for lines in plans.values() for line in lines)
    for index in (
        "transitions_by_time",
        "invocations_by_status",
        "invocations_by_function",
        "invocations_by_change",
        "transitions_by_invocation",
        "outbox_by_invocation",
        "outbox_pending",
        "silences_by_end",
    ):
        assert f"INDEX {index} " in used, index


async def test_every_page_query_uses_an_index(store: SqliteStore) -> None:
    """``EXPLAIN QUERY PLAN`` of every statement behind the pages (not timed)."""
    now = wall_ms()
    await overview_state(store, now)
    plans = query_plans(store.path, now, InvocationRef(FN, "job-f1").key)
    assert len(plans) > 20
    assert_indexed(plans)


async def test_a_page_read_never_holds_up_the_daemons_commits(store: SqliteStore) -> None:
    """While a page's read transaction is open on the console's own connection, the
    daemon's store commits; the page sees one snapshot throughout, the next page the commit."""
    reader = ConsoleReader(store.path)
    entered, release = threading.Event(), threading.Event()
    count_sql = "SELECT COUNT(*) FROM invocations"

    def slow_page(db: sqlite3.Connection) -> tuple[int, int]:
        before = int(db.execute(count_sql).fetchone()[0])
        entered.set()
        release.wait(10)
        return before, int(db.execute(count_sql).fetchone()[0])

    try:
        page = asyncio.create_task(reader.read(slow_page))
        assert await asyncio.to_thread(entered.wait, 10)
        ref = InvocationRef(FN, "job-1")
        await asyncio.wait_for(record(store, ref, succeeded_polls(wall_ms())), timeout=10)
        release.set()
        assert await page == (0, 0)
        assert await reader.read(lambda db: int(db.execute(count_sql).fetchone()[0])) == 1
    finally:
        release.set()
        await reader.close()


_BIG_STATUSES = {"Succeeded": 880, "Failed": 50, "Running": 20, "Enqueued": 10, "Retrying": 10}
_BIG_STATUSES |= {"Expired": 10, "Stopped": 10, "Invalid": 5, "": 5}
_BIG_INVOCATION = (
    "INSERT INTO invocations (key, api, service, function, qualifier, invocation_id, status, "
    "already_retried_times, status_changes, started_ms, end_ms, error_message, "
    "last_event_status, last_event_ms, changed_ms, status_since_ms, last_polled_ms) "
    "VALUES (?, 'fc2', ?, ?, 'LATEST', ?, ?, ?, 2, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BIG_TRANSITION = (
    "INSERT INTO transitions (id, invocation_key, type, observed_ms, data) VALUES (?, ?, ?, ?, ?)"
)
_BIG_OUTBOX = (
    "INSERT INTO outbox (transition_id, invocation_key, sink, state, attempts, created_ms, "
    "done_ms, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _big_transitions(
    n: int, key: str, status: str | None, started_ms: int, changed_ms: int, error: str
) -> list[tuple[str, str, str, int, str]]:
    """A first sighting, an event, and the status now (when there is one)."""
    steps: list[tuple[str, int, str, str | None]] = [
        ("invocation.status_changed", started_ms, "Enqueued", None)
    ]
    steps.append(("invocation.event", started_ms + 50, "Running", None))
    if status is not None:
        steps.append(("invocation.status_changed", changed_ms, status, "Running"))
    rows = []
    for i, (kind, observed_ms, now_status, previous) in enumerate(steps):
        event = {"eventId": 2, "status": "Started", "timestampMs": observed_ms, "eventDetail": ""}
        summary = {"status": now_status, "alreadyRetriedTimes": 0, "startedMs": started_ms}
        summary |= {"errorMessage": error if i == 2 else "", "payloadExcerpt": f'{{"n": {n}}}'}
        transition_id = f"tr_{n:07d}_{i}"
        data = {"id": transition_id, "type": kind, "api": "fc2", "observedMs": observed_ms}
        data |= {"status": now_status, "previousStatus": previous, "labels": {"team": "media"}}
        data |= {"event": event if kind == "invocation.event" else None, "invocation": summary}
        rows.append((transition_id, key, kind, observed_ms, json.dumps(data)))
    return rows


def build_big_state(path: Path, *, invocations: int, now_ms: int, span_ms: int) -> None:
    """A state DB of ``invocations`` changed over the ``span_ms`` before ``now_ms``, in the
    mix a busy watcher keeps: ~3 transitions each, each sent to ``log``, failures also to
    ``hook`` (some pending, some dead), and ``hook``'s circuit open. Bulk SQL: only the
    page's reads are under test here."""
    import random

    from watcher.store.sqlite.connection import connect

    rng = random.Random(7)
    names, weights = list(_BIG_STATUSES), list(_BIG_STATUSES.values())
    rows: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    for n in range(invocations):
        service, function, invocation_id = f"svc-{n % 3}", f"fn-{n % 24:02d}", f"inv-{n:07d}"
        key = f"fc2/{service}/{function}/LATEST/{invocation_id}"
        status = rng.choices(names, weights)[0] or None
        changed_ms = now_ms - int(rng.random() * span_ms)
        started_ms = changed_ms - rng.randint(1_000, 600_000)
        bad = status in FAILURE_STATUSES
        error = f"RuntimeError: {invocation_id} ran out of memory at frame {n % 977}" if bad else ""
        times = (changed_ms, changed_ms, changed_ms, changed_ms)
        identity = (key, service, function, invocation_id, status)
        rows[0].append((*identity, 2 * bad, started_ms, changed_ms, error, "Finished", *times))
        for transition in _big_transitions(n, key, status, started_ms, changed_ms, error):
            rows[1].append(transition)
            observed_ms = transition[3]
            rows[2].append((transition[0], key, "log", "sent", 1, observed_ms, observed_ms, ""))
        if bad:
            state = rng.choices(["sent", "pending", "dead"], [90, 5, 5])[0]
            error_text = "" if state == "sent" else "HTTP 503 from receiver"
            rows[2].append(
                (rows[1][-1][0], key, "hook", state, 3, changed_ms, changed_ms, error_text)
            )
    db = connect(path, readonly=False, busy_timeout_s=5)
    try:
        db.execute("PRAGMA cache_size = -131072")  # 128 MiB: index inserts stay in memory
        db.execute("BEGIN")
        for sql, values in zip((_BIG_INVOCATION, _BIG_TRANSITION, _BIG_OUTBOX), rows, strict=True):
            db.executemany(sql, values)
        db.execute(
            "INSERT INTO sink_health VALUES ('hook', 0, ?, ?, 'connection refused')",
            (now_ms - 600_000, now_ms - 700_000),
        )
        db.execute("COMMIT")
    finally:
        db.close()


BENCH_PAGES = (
    "/",
    "/?fragment=1",
    "/invocations",
    "/invocations?status=Failed",
    "/invocations?function=fn-03&since=7d",
    "/invocations?function=fn-03&status=Succeeded",
    "/invocations?page=1900",
    page_url("fc2/svc-1/fn-01/LATEST/inv-0000001"),
    "/outbox?sink=hook&state=dead",
    "/outbox?sink=log&state=sent&page=100",
    "/silences",
)


async def measure(
    session: aiohttp.ClientSession, url: str, rounds: int = 7
) -> tuple[float, float, str]:
    """(first, median of the next ``rounds``) in ms for the whole answer; the last body."""
    import statistics

    times, body = [], ""
    for _ in range(rounds + 1):
        started = time.perf_counter()
        body = await get(session, url)
        times.append((time.perf_counter() - started) * 1000)
    return times[0], statistics.median(times[1:]), body


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("span_days", [30, 1], ids=["over-30-days", "all-in-24h"])
async def test_pages_at_100000_invocations(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    span_days: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every page answers from a state of 100,000 invocations (~300,000 transitions and
    ~310,000 outbox rows), its queries on indexes. The times are printed, not asserted:
    the first answer (the chart's minutes not yet kept) and the median of seven more."""
    path, now = tmp_path / "state.db", wall_ms()
    await asyncio.to_thread(
        build_big_state, path, invocations=100_000, now_ms=now, span_ms=span_days * 86_400_000
    )
    assert_indexed(query_plans(path, now, "fc2/svc-1/fn-01/LATEST/inv-0000001"))
    lines = []
    async with serve_console(path) as served:
        for page in BENCH_PAGES:
            first, median, body = await measure(session, served.url + page)
            lines.append(f"{page:58} first {first:6.1f} ms  median {median:6.1f} ms")
            if page == "/":
                assert "(100000 tracked)" in body
                assert "circuit open" in body
    (tmp_path / "timings.txt").write_text("\n".join(lines) + "\n")
    with capsys.disabled():
        print(f"\nconsole pages, 100,000 invocations changed over {span_days} day(s):")
        print("\n".join(lines))


async def test_the_charts_kept_minutes_always_match_a_fresh_count(store: SqliteStore) -> None:
    """The chart's cache of settled minutes, read as time goes on, as commits land in the
    open minutes, and after the wall clock went back, gives what a fresh count gives."""
    from watcher.daemon.console.minutes import MinuteCounts
    from watcher.store.sqlite.console_reads import transitions_per_minute

    start = wall_ms() // MINUTE_MS * MINUTE_MS - 30 * MINUTE_MS
    minutes = MinuteCounts()
    window_ms = 20 * MINUTE_MS
    with contextlib.closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as db:
        for step, now in enumerate(range(start, start + 12 * MINUTE_MS, 50_000)):
            polls = [(now - 30_000, fc_body("Running")), (now, fc_body("Succeeded"))]
            await record(store, InvocationRef(FN, f"job-{step}"), polls)
            fresh = sorted(transitions_per_minute(db, now - window_ms))
            assert sorted(minutes.read(db, now - window_ms, now)) == fresh, step
        back = start + 5 * MINUTE_MS  # the clock stepped back; a commit lands in a kept minute
        await record(store, InvocationRef(FN, "job-back"), [(back, fc_body("Failed"))])
        fresh = sorted(transitions_per_minute(db, back - window_ms))
        assert sorted(minutes.read(db, back - window_ms, back)) == fresh


async def test_a_state_that_cannot_be_read_is_a_503_that_says_why(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with serve_console(tmp_path / "missing.db") as served:
        page = await get(session, served.url + "/", 503)
    assert "does not exist yet" in visible(page)


async def test_a_silence_form_with_bad_fields_is_refused_and_says_which(
    store: SqliteStore, session: aiohttp.ClientSession
) -> None:
    """No matcher, an unknown transition type, a bad label, an end before the start, no
    author: each a 400 naming the problem, and nothing stored."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    good = {"function": "f*", "ends": "1h", "comment": "c", "author": "a"}
    bad_forms = {
        "give at least one matcher": {**good, "function": ""},
        "type.0: Input should be": {**good, "type": "invocation.bogus"},
        "labels: &#39;team&#39; is not name=value": {**good, "labels": "team"},
        "must end after it starts": {**good, "starts": "2h", "ends": "2020-01-01"},
        "author is required": {**good, "author": " "},
    }
    async with serve_console(store.path, token=TOKEN, actions=daemon_actions(store)) as served:
        for message, form in bad_forms.items():
            async with session.post(served.url + "/silences", data=form, headers=bearer) as r:
                assert r.status == 400, message
                assert message in await r.text(), message
    assert silence_rows(store.path) == []
