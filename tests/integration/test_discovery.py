"""Discovery and list-based watching against the emulator, for FC 2.0 and FC 3.0.

Each test drives the emulator's manual clock and runs scans by hand (``scan_all``), so what a
scan finds is deterministic; the invocations' transitions are read from the state DB.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import EmulatorFactory, RunningEmulator, emulator_fc
from watcher.config.models import Config, Discover
from watcher.core.clock import SystemClock
from watcher.core.invocation import Api, FunctionRef
from watcher.core.model import Transition, TransitionType
from watcher.daemon.build import Parts, build
from watcher.engine.discovery import discover_specs
from watcher.fc.models import InvocationPage, ListFilter
from watcher.store.sqlite import SqliteStore

pytestmark = pytest.mark.parametrize("api", [Api.FC2, Api.FC3], ids=["fc2", "fc3"])

FUNCTION = "transcode"


def _spec(api: Api, invocation_id: str, timeline: list[tuple[float, str]], **extra: Any) -> Any:
    spec: dict[str, Any] = {
        "id": invocation_id,
        "api": api.value,
        "function": FUNCTION,
        "service": "media" if api is Api.FC2 else None,
        "timeline": [{"at_s": at_s, "status": status} for at_s, status in timeline],
        "appears_at_s": timeline[0][0],
        **extra,
    }
    return spec


def _config(api: Api, url: str, state: Path, **discover: Any) -> Config:
    entry: dict[str, Any] = {"function": FUNCTION, "discover": discover}
    if api is Api.FC2:
        entry["service"] = "media"
    else:
        entry["api"] = "fc3"
    return Config.model_validate(
        {"fc": emulator_fc(url), "state": {"path": state}, "watch": [entry]}
    )


@dataclass
class Rig:
    """A watcher built for discovery, and the emulator it watches."""

    emulator: RunningEmulator
    state: Path
    config: Config
    session: aiohttp.ClientSession
    parts: Parts | None = None

    async def start(self) -> Parts:
        store = await SqliteStore.open(self.state)
        self.parts = await build(
            self.config,
            (),
            store=store,
            session=self.session,
            clock=SystemClock(),
            rng=random.Random(7),
            metrics=None,
        )
        return self.parts

    async def restart(self) -> Parts:
        assert self.parts is not None
        await self.parts.store.close()
        return await self.start()

    async def scan(self, advance_s: float = 0.0) -> None:
        assert self.parts is not None
        self.emulator.clock.advance(advance_s)
        await self.parts.discovery.scan_all()

    async def transitions(self) -> list[Transition]:
        assert self.parts is not None
        return await self.parts.store.transitions()

    def tracked_ids(self) -> set[str]:
        assert self.parts is not None
        return {key.rsplit("/", 1)[1] for key in self.parts.scheduler.snapshots()}


@pytest.fixture
async def rig_factory(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[Rig] = []

    async def make(
        api: Api, invocations: list[Any], *, scenario: dict[str, Any] | None = None, **discover: Any
    ) -> Rig:
        emulator = await start_emulator(invocations=invocations, **(scenario or {}))
        state = tmp_path / "state.db"
        rig = Rig(emulator, state, _config(api, emulator.url, state, **discover), http_session)
        rigs.append(rig)
        await rig.start()
        return rig

    yield make
    for rig in rigs:
        if rig.parts is not None:
            await rig.parts.store.close()


def _statuses(transitions: list[Transition], invocation_id: str) -> list[str | None]:
    return [
        t.status
        for t in transitions
        if t.ref.invocation_id == invocation_id and t.type is TransitionType.STATUS_CHANGED
    ]


def _no_id_twice(transitions: list[Transition]) -> None:
    counts = Counter(t.id for t in transitions)
    assert not [i for i, n in counts.items() if n > 1]


async def test_first_scan_tracks_what_runs_not_what_finished_before(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    """since_s 0: the running one is tracked and reported, the one that failed before the
    watcher's first scan is not; one that starts later is reported, failure included."""
    rig = await rig_factory(
        api,
        [
            _spec(api, "done-before", [(0, "Running"), (1, "Failed")]),
            _spec(api, "running", [(0, "Running")]),
            _spec(api, "later", [(20, "Running"), (25, "Failed")]),
        ],
    )
    await rig.scan(advance_s=5)
    assert rig.tracked_ids() == {"running"}
    await rig.scan(advance_s=25)  # "later" started and failed between two scans
    transitions = await rig.transitions()
    assert _statuses(transitions, "later") == ["Failed"]
    assert _statuses(transitions, "running") == ["Running"]
    assert _statuses(transitions, "done-before") == []
    events = [t for t in transitions if t.type is TransitionType.EVENT]
    assert {(t.ref.invocation_id, t.event.status) for t in events if t.event} >= {
        ("later", "Running"),
        ("later", "Failed"),
    }  # every event of what changed twice between scans, from its Get
    _no_id_twice(transitions)


async def test_since_s_reaches_back_for_finished_ones(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    rig = await rig_factory(
        api,
        [_spec(api, "done-before", [(0, "Running"), (1, "Failed")])],
        since_s=3600,
    )
    await rig.scan(advance_s=5)
    assert _statuses(await rig.transitions(), "done-before") == ["Failed"]


async def test_prefix_filters_what_is_tracked(api: Api, rig_factory: Callable[..., Any]) -> None:
    rig = await rig_factory(
        api,
        [
            _spec(api, "job-1", [(0, "Running")]),
            _spec(api, "other-1", [(0, "Running")]),
            _spec(api, "job-2", [(10, "Running"), (12, "Succeeded")]),
            _spec(api, "other-2", [(10, "Running"), (12, "Failed")]),
        ],
        prefix="job-",
    )
    await rig.scan(advance_s=1)
    await rig.scan(advance_s=15)
    assert rig.tracked_ids() == {"job-1", "job-2"}


async def test_statuses_keeps_only_those_first_seen_in_them(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    rig = await rig_factory(
        api,
        [
            _spec(api, "ok", [(10, "Running"), (11, "Succeeded")]),
            _spec(api, "bad", [(10, "Running"), (11, "Failed")]),
        ],
        statuses=["Failed"],
    )
    await rig.scan(advance_s=1)
    await rig.scan(advance_s=15)
    assert rig.tracked_ids() == {"bad"}


async def test_a_restart_neither_re_reports_nor_misses(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    rig = await rig_factory(
        api,
        [
            _spec(api, "a", [(10, "Running"), (30, "Succeeded")]),
            _spec(api, "b", [(12, "Running"), (14, "Failed")]),
            _spec(api, "c", [(40, "Running"), (42, "Failed")]),
        ],
    )
    await rig.scan(advance_s=1)
    await rig.scan(advance_s=15)  # a running, b failed
    before = await rig.transitions()
    assert _statuses(before, "b") == ["Failed"]
    await rig.restart()
    await rig.scan(advance_s=30)  # a succeeded, c started and failed while we were away
    after = await rig.transitions()
    assert _statuses(after, "a") == ["Running", "Succeeded"]
    assert _statuses(after, "b") == ["Failed"]
    assert _statuses(after, "c") == ["Failed"]
    _no_id_twice(after)


async def test_an_invocation_that_drops_out_of_the_active_lists_gets_a_get(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    rig = await rig_factory(
        api,
        [_spec(api, "long", [(0, "Running"), (50, "Retrying"), (51, "Running"), (60, "Failed")])],
    )
    await rig.scan(advance_s=1)
    gets_before = rig.emulator.stats.get("requests:long", 0)
    await rig.scan(advance_s=10)  # unchanged: no Get
    assert rig.emulator.stats.get("requests:long", 0) == gets_before
    await rig.scan(advance_s=60)  # retried and failed between two scans: missing, so a Get
    assert rig.emulator.stats.get("requests:long", 0) == gets_before + 1
    transitions = await rig.transitions()
    assert _statuses(transitions, "long")[-1] == "Failed"
    retried = [t for t in transitions if t.event and t.event.status == "Retrying"]
    assert len(retried) == 1  # the retry between scans is still reported, from the events


class InsertingLister:
    """The real client, with the emulator's clock moved on after each page: invocations
    start and finish between the pages of one List."""

    def __init__(self, parts: Parts, emulator: RunningEmulator, step_s: float) -> None:
        self._client = parts.client
        self._emulator = emulator
        self._step_s = step_s

    async def list_invocations_page(
        self,
        function_ref: FunctionRef,
        list_filter: ListFilter | None = None,
        next_token: str | None = None,
    ) -> InvocationPage:
        page = await self._client.list_invocations_page(function_ref, list_filter, next_token)
        self._emulator.clock.advance(self._step_s)
        return page


@pytest.mark.parametrize("tokens", ["keyset", "offset"])
async def test_pagination_with_inserts_between_pages_loses_and_doubles_nothing(
    api: Api, tokens: str, rig_factory: Callable[..., Any]
) -> None:
    """250 invocations start 0.1 s apart, each failing 5 s after it started; pages are read
    while the clock moves, so each page's neighbours start, change status or finish. With
    offset tokens (a server that pages by position) that repeats items and skips others."""
    invocations = [
        _spec(api, f"job-{n:04d}", [(n * 0.1, "Running"), (n * 0.1 + 5, "Failed")])
        for n in range(250)
    ]
    rig = await rig_factory(api, invocations, scenario={"list_tokens": tokens}, since_s=3600)
    assert rig.parts is not None
    for scanner in rig.parts.discovery.scanners.values():
        scanner._pages._lister = InsertingLister(rig.parts, rig.emulator, 0.5)
    for _ in range(8):
        await rig.scan(advance_s=5)
    await rig.scan(advance_s=60)
    transitions = await rig.transitions()
    failed = {t.ref.invocation_id for t in transitions if t.status == "Failed"}
    assert failed == {f"job-{n:04d}" for n in range(250)}
    _no_id_twice(transitions)


async def test_list_items_without_events_still_report_every_event(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    """The emulator leaves ``events`` out of List items, as FC may: every event still comes,
    from the Get that a changed item costs."""
    rig = await rig_factory(
        api, [_spec(api, "a", [(0, "Running"), (2, "Retrying"), (3, "Running"), (4, "Failed")])]
    )
    assert rig.parts is not None
    function_ref = FunctionRef(api, FUNCTION, "media" if api is Api.FC2 else None)
    rig.emulator.clock.advance(1)
    page = await rig.parts.client.list_invocations_page(function_ref)
    assert [item.events for item in page.invocations] == [()]
    await rig.scan()
    await rig.scan(advance_s=5)
    events = [t.event.status for t in await rig.transitions() if t.event]
    assert events == ["Running", "Retrying", "Running", "Failed"]


async def test_a_reload_adds_and_removes_discover_entries(
    api: Api, rig_factory: Callable[..., Any]
) -> None:
    rig = await rig_factory(
        api,
        [_spec(api, "job-1", [(0, "Running")]), _spec(api, "other-1", [(0, "Running")])],
        prefix="job-",
    )
    assert rig.parts is not None
    await rig.scan(advance_s=1)
    assert rig.tracked_ids() == {"job-1"}
    wider = rig.config.model_copy(
        update={"watch": [rig.config.watch[0].model_copy(update={"discover": Discover()})]}
    )
    snapshots = await rig.parts.store.load_snapshots()
    rig.parts.discovery.configure(discover_specs(wider), snapshots, wider.poll)
    await rig.scan(advance_s=1)
    assert rig.tracked_ids() == {"job-1", "other-1"}
    rig.parts.discovery.configure({}, snapshots, wider.poll)
    assert rig.tracked_ids() == set()  # no entry discovers them, and no config lists them


async def test_a_malformed_list_item_does_not_hide_the_others(
    api: Api, rig_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FC lists an item with no status: it is left out (and said once); the rest are found."""
    rig = await rig_factory(
        api,
        [_spec(api, "bad-1", [(0, "Running")]), _spec(api, "good-1", [(0, "Running")])],
        since_s=3600,
    )
    catalog = rig.emulator.emulator.app.catalog
    render_item = catalog.list_item

    def list_item(entry: Any, now_s: float, *, include_payload: bool) -> bytes:
        item: bytes = render_item(entry, now_s, include_payload=include_payload)
        return item.replace(b'"Running"', b"null") if b"bad-1" in item else item

    monkeypatch.setattr(catalog, "list_item", list_item)
    await rig.scan(advance_s=1)
    assert rig.tracked_ids() == {"good-1"}
