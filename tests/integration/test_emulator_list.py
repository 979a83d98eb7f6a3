"""The emulator's List over real loopback HTTP, through the signed client: generated functions,
every parameter, opaque tokens (keyset and offset) while the set changes between pages, times
before the emulator's start, run-time submissions and stops."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import pytest

from tests.conftest import EmulatorFactory, make_client
from watcher.core.invocation import TERMINAL_STATUSES, Api, FunctionRef, Invocation, InvocationRef
from watcher.devtools.emulator.tokens import TokenMode, decode
from watcher.fc import errors
from watcher.fc.client import FcClient
from watcher.fc.models import ListFilter, SortOrder

FC2_FN = FunctionRef(Api.FC2, "transcode", "media")
FC3_FN = FunctionRef(Api.FC3, "transcode")
RUNNING = {"Running": 1}
PROD = "prod"


def _generator(fn: FunctionRef, **fields: Any) -> dict[str, Any]:
    return {"api": fn.api.value, "service": fn.service, "function": fn.function, **fields}


async def _all(client: FcClient, fn: FunctionRef, list_filter: ListFilter) -> list[Invocation]:
    return [invocation async for invocation in client.list_invocations(fn, list_filter)]


@pytest.mark.parametrize("fn", [FC2_FN, FC3_FN], ids=["fc2", "fc3"])
async def test_a_generated_function_lists_as_get_sees_it(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, fn: FunctionRef
) -> None:
    """Every invocation once, in start order, with Get's status; the status filter agrees."""
    generator = _generator(
        fn,
        count=120,
        start_s=-600,
        every_s=5,
        run_s=[0, 1200],
        retries=[0, 1],
        outcomes={"Succeeded": 2, "Failed": 1, "Running": 1, "Expired": 1},
    )
    emu = await start_emulator(seed=5, generators=[generator])
    client = make_client(http_session, emu.url)
    listed = await _all(client, fn, ListFilter(limit=17))
    ids = [i.invocation_id for i in listed]
    assert ids == [f"job-{n:06d}" for n in range(120)]
    assert [i.started_ms for i in listed] == sorted(i.started_ms for i in listed)
    got = {i: await client.get_invocation(InvocationRef(fn, i)) for i in ids}
    assert {i.invocation_id: i.status for i in listed} == {i: g.status for i, g in got.items()}
    running = await _all(client, fn, ListFilter(status="Running", sort_order_by_time="desc"))
    expected = [i for i in reversed(ids) if got[i].status == "Running"]
    assert [i.invocation_id for i in running] == expected
    assert 0 < len(expected) < 120


async def test_list_items_agree_with_get_before_the_emulator_started(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """Times before the emulator's start are negative offsets from it, the same in Get and
    List; List leaves out events and (unless asked) the payload, and keeps returnPayload."""
    invocation = {
        "id": "early-1",
        "service": "media",
        "function": "transcode",
        "payload": "in",
        "appears_at_s": -30,
        "timeline": [
            {"at_s": -30, "status": "Enqueued"},
            {"at_s": -20, "status": "Running"},
            {"at_s": -2.5, "status": "Succeeded", "return_payload": "out"},
        ],
    }
    emu = await start_emulator(invocations=[invocation])
    client = make_client(http_session, emu.url)
    got = await client.get_invocation(InvocationRef(FC2_FN, "early-1"))
    [plain] = await _all(client, FC2_FN, ListFilter())
    [full] = await _all(client, FC2_FN, ListFilter(include_payload=True))
    epoch_ms = emu.emulator.app.epoch_ms
    assert got.started_ms == plain.started_ms == epoch_ms - 30_000
    assert got.end_ms == plain.end_ms == epoch_ms - 2_500
    assert (plain.status, plain.return_payload, plain.payload, full.payload) == (
        "Succeeded",
        "out",
        "",
        "in",
    )
    assert plain.events == () and len(got.events) == 3
    emu = await start_emulator(invocations=[invocation], list_events=True)
    client = make_client(http_session, emu.url)
    [with_events] = await _all(client, FC2_FN, ListFilter())
    assert [e.status for e in with_events.events] == ["Enqueued", "Running", "Succeeded"]


async def test_filters_order_qualifier_time_range_and_retention(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession
) -> None:
    """Prefix, status, an inclusive start range, descending order, the qualifier, and the
    7-day window (older tasks are not listed, as FC documents)."""
    emu = await start_emulator(
        generators=[
            _generator(FC2_FN, prefix="a-", count=5, start_s=-10, every_s=2, outcomes=RUNNING),
            _generator(
                FC2_FN, prefix="b-", count=2, start_s=-9, every_s=2, run_s=1, qualifier=PROD
            ),
            _generator(FC2_FN, prefix="old-", count=2, start_s=-8 * 86_400),
        ]
    )
    client = make_client(http_session, emu.url)
    epoch_ms = emu.emulator.app.epoch_ms

    async def ids(fn: FunctionRef = FC2_FN, **fields: Any) -> list[str]:
        return [i.invocation_id for i in await _all(client, fn, ListFilter(**fields))]

    assert await ids() == [
        "a-000000",
        "b-000000",
        "a-000001",
        "b-000001",
        "a-000002",
        "a-000003",
        "a-000004",
    ]
    assert await ids(id_prefix="b-", limit=1) == ["b-000000", "b-000001"]
    assert await ids(status="Running", sort_order_by_time="desc") == [
        f"a-00000{n}" for n in (4, 3, 2, 1, 0)
    ]
    window = {"started_time_begin_ms": epoch_ms - 8_000, "started_time_end_ms": epoch_ms - 4_000}
    assert await ids(**window) == ["a-000001", "b-000001", "a-000002", "a-000003"]  # inclusive
    prod = FunctionRef(Api.FC2, "transcode", "media", "prod")
    assert await ids(prod) == ["b-000000", "b-000001"]
    old = await client.get_invocation(InvocationRef(FC2_FN, "old-000000"))
    assert old.status == "Succeeded"  # Get still finds it; List no longer shows it


@pytest.mark.parametrize(
    ("list_filter", "token"),
    [
        (ListFilter(limit=0), None),
        (ListFilter(limit=101), None),
        (ListFilter(sort_order_by_time=cast(SortOrder, "sideways")), None),
        (ListFilter(), "10"),
        (ListFilter(), "eyJ2IjoxLCJvZmZzZXQiOjR9"),  # an offset token, to a keyset emulator
    ],
)
async def test_bad_parameters_are_refused_with_400(
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    list_filter: ListFilter,
    token: str | None,
) -> None:
    """A limit out of [1, 100], an unknown order, or a token this emulator did not make."""
    emu = await start_emulator(generators=[_generator(FC3_FN, count=3)])
    client = make_client(http_session, emu.url)
    with pytest.raises(errors.RequestError) as caught:
        await client.list_invocations_page(FC3_FN, list_filter, token)
    assert (caught.value.http_status, caught.value.code) == (400, "InvalidArgument")


def _running_since(n: int) -> dict[str, Any]:
    """job-0n, Running since 100 - n s before the start; job-08 finishes at 5 s."""
    timeline = [{"at_s": -100 + n, "status": "Running"}]
    if n == 8:
        timeline.append({"at_s": 5, "status": "Succeeded"})
    return {"id": f"job-0{n}", "service": "media", "function": "transcode", "timeline": timeline}


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("keyset", [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]),
        ("offset", [[9, 8, 7, 6], [6, 5, 4, 3], [1, 0]]),  # 6 repeats, 2 is skipped
    ],
)
async def test_tokens_while_the_set_changes_between_pages(
    start_emulator: EmulatorFactory,
    http_session: aiohttp.ClientSession,
    tokens: TokenMode,
    expected: list[list[int]],
) -> None:
    """Newest first, Running only: after page 1 a new invocation is submitted (ahead of the
    cursor), after page 2 one already served finishes (drops out of the filter). Keyset tokens
    serve each item once; offset tokens repeat one and skip one."""
    invocations = [_running_since(n) for n in range(10)]
    emu = await start_emulator(invocations=invocations, list_tokens=tokens)
    running_now = [{"at_s": 0, "status": "Running"}]
    submitted = {
        "id": "late-1",
        "service": "media",
        "function": "transcode",
        "timeline": running_now,
    }
    client = make_client(http_session, emu.url)
    running = ListFilter(status="Running", sort_order_by_time="desc", limit=4)
    pages: list[list[str]] = []
    token: str | None = None
    for step in range(3):
        page = await client.list_invocations_page(FC2_FN, running, token)
        pages.append([i.invocation_id.removeprefix("job-0") for i in page.invocations])
        token = page.next_token
        if step == 0:
            assert not token.isdigit() and decode(token, tokens) is not None
            async with http_session.post(f"{emu.url}/-/submit", json=submitted) as response:
                assert response.status == 200
        if step == 1:
            emu.clock.advance(5)
    assert pages == [[str(n) for n in served] for served in expected]
    assert token == ""


@pytest.mark.parametrize("fn", [FC2_FN, FC3_FN], ids=["fc2", "fc3"])
async def test_submissions_and_stops_show_in_get_and_list(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, fn: FunctionRef
) -> None:
    """A submitted invocation (its function named by no config) follows its timeline from now;
    the same id again is a 409; a stop moves it to the Stopped list."""
    emu = await start_emulator()
    emu.clock.advance(50)
    client = make_client(http_session, emu.url)
    body = {
        "api": fn.api.value,
        "service": fn.service,
        "function": fn.function,
        "id": "sub-1",
        "timeline": [{"at_s": 0, "status": "Running"}, {"at_s": 30, "status": "Succeeded"}],
    }
    async with http_session.post(f"{emu.url}/-/submit", json=body) as response:
        assert response.status == 200
        started_ms = (await response.json())["startedTime"]
    assert started_ms == emu.emulator.app.epoch_ms + 50_000
    async with http_session.post(f"{emu.url}/-/submit", json=body) as response:
        assert response.status == 409
        assert "AlreadyExists" in (await response.json())["ErrorCode"]
    async with http_session.post(f"{emu.url}/-/submit", json={"id": "a/b"}) as response:
        assert response.status == 400
    [listed] = await _all(client, fn, ListFilter(status="Running"))
    assert (listed.invocation_id, listed.started_ms) == ("sub-1", started_ms)
    await client.stop_invocation(InvocationRef(fn, "sub-1"))
    assert await _all(client, fn, ListFilter(status="Running")) == []
    [stopped] = await _all(client, fn, ListFilter(status="Stopped"))
    assert stopped.status in TERMINAL_STATUSES
    emu.clock.advance(60)  # past the Succeeded the stop cut off
    assert (await client.get_invocation(InvocationRef(fn, "sub-1"))).status == "Stopped"
    assert [i.status for i in await _all(client, fn, ListFilter())] == ["Stopped"]
