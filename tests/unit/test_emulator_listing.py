"""The emulator's List machinery, pure parts: query parsing, opaque tokens, page selection (keyset
and offset), the per-function status index against the timeline itself, generators, submissions.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.invocation import IDENTIFIER_PATTERN, TERMINAL_STATUSES, Api
from watcher.devtools.emulator.auth import Denial
from watcher.devtools.emulator.catalog import Catalog
from watcher.devtools.emulator.control import parse_submission
from watcher.devtools.emulator.generators import GeneratorSpec, expand
from watcher.devtools.emulator.index import Entry, FunctionIndex, SortKey
from watcher.devtools.emulator.listing import ListRequest, parse_list_request, select_page
from watcher.devtools.emulator.scenario import InvocationSpec, Scenario, Step
from watcher.devtools.emulator.timeline import epoch_at, started_s, state_at
from watcher.devtools.emulator.tokens import Keyset, Offset, TokenMode, decode, encode

# -- parsing ---------------------------------------------------------------------------------


def _request(api: Api = Api.FC2, tokens: TokenMode = "keyset", **query: str) -> ListRequest:
    parsed = parse_list_request(api, query, tokens=tokens)
    assert isinstance(parsed, ListRequest)
    return parsed


def test_list_request_defaults_per_api() -> None:
    """FC 2.0 pages 50 by default and FC 3.0 20; each reads its own prefix parameter."""
    fc2 = _request(Api.FC2, invocationIdPrefix="a", prefix="b")
    fc3 = _request(Api.FC3, invocationIdPrefix="a", prefix="b")
    assert (fc2.limit, fc2.prefix, fc3.limit, fc3.prefix) == (50, "a", 20, "b")
    assert (fc2.descending, fc2.include_payload, fc2.status, fc2.cursor) == (
        False,
        False,
        None,
        None,
    )


def test_list_request_reads_every_parameter() -> None:
    """Each documented parameter lands where the page selection reads it."""
    parsed = _request(
        limit="100",
        status="Running",
        startedTimeBegin="-5",
        startedTimeEnd="9",
        sortOrderByTime="desc",
        includePayload="True",
        qualifier="prod",
        nextToken=encode(Keyset(3, "job-1")),
    )
    assert parsed == ListRequest(
        limit=100,
        cursor=Keyset(3, "job-1"),
        begin_ms=-5,
        end_ms=9,
        prefix="",
        qualifier="prod",
        status="Running",
        include_payload=True,
        descending=True,
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, "limit must be in [1, 100]"),
        ({"limit": "101"}, "limit must be in [1, 100]"),
        ({"limit": "x"}, "limit must be an integer"),
        ({"limit": "1.5"}, "limit must be an integer"),
        ({"startedTimeBegin": "yesterday"}, "startedTimeBegin must be an integer"),
        ({"startedTimeEnd": "1e3"}, "startedTimeEnd must be an integer"),
        ({"sortOrderByTime": "up"}, "sortOrderByTime must be asc or desc"),
        ({"includePayload": "yes"}, "includePayload must be true or false"),
        ({"nextToken": "10"}, "nextToken is invalid"),
        ({"nextToken": "not base64!"}, "nextToken is invalid"),
    ],
)
def test_bad_list_parameters_are_a_400(query: dict[str, str], message: str) -> None:
    """Malformed values are refused as FC refuses them, naming the parameter."""
    parsed = parse_list_request(Api.FC3, query, tokens="keyset")
    assert isinstance(parsed, Denial)
    assert (parsed.http_status, parsed.code) == (400, "InvalidArgument")
    assert message in parsed.message


# -- tokens ----------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@given(
    started_ms=st.integers(-(2**50), 2**50),
    invocation_id=st.from_regex(IDENTIFIER_PATTERN, fullmatch=True),
    position=st.integers(0, 2**40),
)
def test_tokens_round_trip_and_are_opaque(
    started_ms: int, invocation_id: str, position: int
) -> None:
    """A token decodes to what it encodes, in its own mode only, and shows no bare number."""
    keyset = encode(Keyset(started_ms, invocation_id))
    offset = encode(Offset(position))
    assert decode(keyset, "keyset") == Keyset(started_ms, invocation_id)
    assert decode(offset, "offset") == Offset(position)
    assert decode(keyset, "offset") is None
    assert decode(offset, "keyset") is None
    assert not offset.isdigit()
    assert str(position) not in offset


@pytest.mark.parametrize(
    ("token", "mode"),
    [
        (_b64(b"not json"), "keyset"),
        (_b64(b"[1, 2]"), "offset"),
        (_b64(b'{"v": 2, "offset": 1}'), "offset"),
        (_b64(b'{"v": 1, "offset": -1}'), "offset"),
        (_b64(b'{"v": 1, "offset": true}'), "offset"),
        (_b64(b'{"v": 1, "offset": 1, "x": 0}'), "offset"),
        (_b64(b'{"v": 1, "after": [1]}'), "keyset"),
        (_b64(b'{"v": 1, "after": ["1", "a"]}'), "keyset"),
        (_b64(b'{"v": 1, "after": [1, "a/b"]}'), "keyset"),
        (_b64(b"\xff\xfe"), "keyset"),
        ("a", "keyset"),
    ],
)
def test_tokens_that_do_not_decode(token: str, mode: TokenMode) -> None:
    """Anything but a token this emulator made is refused."""
    assert decode(token, mode) is None


# -- page selection --------------------------------------------------------------------------

keys_strategy = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["a", "b", "ab", "ba", "c"])).map(
        lambda pair: (pair[0], f"{pair[1]}-{pair[0]}")
    ),
    unique=True,
    max_size=40,
).map(sorted)


def _walk(
    state: Callable[[int], Sequence[SortKey]], request: ListRequest, tokens: TokenMode
) -> list[list[SortKey]]:
    """Every page until the last; ``state(n)`` is the candidate list when page n is asked."""
    pages: list[list[SortKey]] = []
    cursor = None
    while len(pages) < 100:
        current = ListRequest(**{**_fields(request), "cursor": cursor})
        page = select_page(state(len(pages)), current, tokens=tokens)
        pages.append(page.keys)
        if page.next_cursor is None:
            return pages
        cursor = decode(encode(page.next_cursor), tokens)  # through the wire form
    raise AssertionError("paging did not end")


def _fields(request: ListRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in ListRequest.__slots__}


@settings(max_examples=300)
@given(
    keys=keys_strategy,
    limit=st.integers(1, 12),
    descending=st.booleans(),
    prefix=st.sampled_from(["", "a", "b-", "zz"]),
    begin_ms=st.none() | st.integers(0, 30),
    end_ms=st.none() | st.integers(0, 30),
    tokens=st.sampled_from(["keyset", "offset"]),
)
def test_paging_yields_every_match_once_in_order(
    keys: list[SortKey],
    limit: int,
    descending: bool,
    prefix: str,
    begin_ms: int | None,
    end_ms: int | None,
    tokens: TokenMode,
) -> None:
    """With a set that does not change, both token kinds walk every match once, in order, and
    only the last page has no token (an empty last page only when nothing matches)."""
    request = ListRequest(limit, None, begin_ms, end_ms, prefix, None, None, False, descending)
    expected = [
        k
        for k in keys
        if k[1].startswith(prefix)
        and (begin_ms is None or k[0] >= begin_ms)
        and (end_ms is None or k[0] <= end_ms)
    ]
    expected.sort(reverse=descending)
    pages = _walk(lambda _: keys, request, tokens)
    assert [k for page in pages for k in page] == expected
    assert all(len(page) == limit for page in pages[:-1])
    assert pages[-1] or not expected


@settings(max_examples=300)
@given(
    keys=keys_strategy,
    limit=st.integers(1, 6),
    descending=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_keyset_paging_survives_inserts_and_removals(
    keys: list[SortKey], limit: int, descending: bool, seed: int
) -> None:
    """Between pages, items come and go; keyset paging never repeats one, and every item that
    was there all along is served."""
    rng = random.Random(seed)
    states = [keys]
    for _ in range(60):
        current = [k for k in states[-1] if rng.random() > 0.1]
        current += [(rng.randint(0, 30), f"new-{rng.randint(0, 10**6)}") for _ in range(2)]
        states.append(sorted(set(current)))
    request = ListRequest(limit, None, None, None, "", None, None, False, descending)
    pages = _walk(lambda n: states[min(n, len(states) - 1)], request, "keyset")
    served = [k for page in pages for k in page]
    assert len(served) == len(set(served))
    assert set.intersection(*map(set, states[: len(pages)])) <= set(served)
    assert served == sorted(served, reverse=descending)


def test_offset_paging_repeats_after_an_insert_and_skips_after_a_removal() -> None:
    """Offset tokens count positions: an earlier insert repeats an item, a removal skips one."""
    keys: list[SortKey] = [(t, f"job-{t}") for t in range(10)]
    request = ListRequest(3, None, None, None, "", None, None, False, False)
    first = select_page(keys, request, tokens="offset")
    assert first.next_cursor == Offset(3)
    second = ListRequest(**{**_fields(request), "cursor": first.next_cursor})
    inserted = sorted([*keys, (0, "early")])
    assert select_page(inserted, second, tokens="offset").keys[0] == first.keys[-1]
    removed = keys[1:]
    assert select_page(removed, second, tokens="offset").keys[0] == (4, "job-4")  # 3 skipped
    keyset = select_page(keys, request, tokens="keyset")
    after = ListRequest(**{**_fields(request), "cursor": keyset.next_cursor})
    assert select_page(inserted, after, tokens="keyset").keys[0] == (3, "job-3")
    assert select_page(removed, after, tokens="keyset").keys[0] == (3, "job-3")


def test_floor_and_accept_narrow_the_page() -> None:
    """The 7-day floor hides older starts; ``accept`` filters what the keys cannot tell."""
    keys: list[SortKey] = [(t, f"job-{t}") for t in range(10)]
    request = ListRequest(100, None, 2, None, "", None, None, False, False)
    page = select_page(keys, request, tokens="keyset", floor_ms=5, accept=lambda k: k[0] % 2 == 0)
    assert page.keys == [(6, "job-6"), (8, "job-8")]


# -- the status index ------------------------------------------------------------------------

STATUSES = ["Enqueued", "Running", "Retrying", "Succeeded", "Failed"]
timelines = st.lists(st.tuples(st.integers(-5, 20), st.sampled_from(STATUSES)), max_size=5).map(
    lambda steps: tuple(Step(at_s=t, status=s) for t, s in sorted(steps, key=lambda x: x[0]))
)
specs_strategy = st.lists(
    st.builds(
        lambda timeline, appears: (timeline, appears),
        timelines,
        st.none() | st.integers(-5, 20).map(float),
    ),
    max_size=12,
)


def _status_now(entry: Entry, now_s: float) -> str | None:
    body = state_at(
        entry.spec, now_s, epoch_ms=0, account_id="1", region="r", stopped_at_s=entry.stopped_at_s
    )
    return None if body is None else str(body["status"])


@settings(max_examples=200, deadline=None)
@given(
    specs=specs_strategy,
    moves=st.lists(
        st.tuples(st.integers(-6, 25), st.sampled_from(["look", "stop", "submit"])), max_size=12
    ),
)
def test_index_agrees_with_the_timeline(
    specs: list[tuple[tuple[Step, ...], float | None]], moves: list[tuple[int, str]]
) -> None:
    """At any time, the clock moving back or forth, with stops and submissions between, each
    status list holds exactly the invocations ``state_at`` gives that status, in start order."""
    entries = [_entry(f"i{n}", timeline, appears) for n, (timeline, appears) in enumerate(specs)]
    index = FunctionIndex(entries)
    for number, (now_s, move) in enumerate(moves):
        if move == "stop":
            live = [e for e in entries if _status_now(e, now_s) not in (None, *TERMINAL_STATUSES)]
            if live:
                index.stop(live[0], now_s)
        elif move == "submit":
            # Submitted as begun 2 s ago: part of its timeline is already past.
            timeline = (
                Step(at_s=now_s - 2, status="Running"),
                Step(at_s=now_s + 3, status="Failed"),
            )
            entries.append(_entry(f"new{number}", timeline, float(now_s - 2)))
            index.add(entries[-1], now_s)
        for status in [None, *STATUSES, "Stopped"]:
            expected = sorted(
                e.sort_key
                for e in entries
                if _status_now(e, now_s) is not None
                and (status is None or _status_now(e, now_s) == status)
            )
            assert index.candidates(now_s, status) == expected


def _entry(invocation_id: str, timeline: tuple[Step, ...], appears: float | None) -> Entry:
    spec = InvocationSpec(id=invocation_id, appears_at_s=appears, timeline=timeline)
    key = (Api.FC2, "demo-service", "demo-function", invocation_id)
    return Entry(spec=spec, key=key, sort_key=(epoch_at(0, started_s(spec)), invocation_id))


# -- generators ------------------------------------------------------------------------------


def _generator(**fields: Any) -> GeneratorSpec:
    return GeneratorSpec.model_validate({"service": "media", "function": "transcode", **fields})


def test_generators_are_deterministic_and_follow_their_stanza() -> None:
    """Same seed, same invocations; ids, start spacing, run time, retries and outcomes as told."""
    generator = _generator(
        prefix="job-",
        id_start=7,
        count=1000,
        start_s=-100,
        every_s=0.5,
        run_s=[10, 20],
        retries=[0, 2],
        outcomes={"Succeeded": 0.8, "Failed": 0.2},
        error="exit 1",
    )
    made = expand(generator, seed=1, index=0)
    assert made == expand(generator, seed=1, index=0)
    assert made != expand(generator, seed=2, index=0)
    assert [m.id for m in made[:2]] == ["job-000007", "job-000008"]
    assert [m.timeline[0].at_s for m in made[:3]] == [-100, -99.5, -99]
    finals = [m.timeline[-1] for m in made]
    assert 700 < sum(f.status == "Succeeded" for f in finals) < 900
    assert all(f.error == "exit 1" for f in finals if f.status == "Failed")
    for invocation in made:
        running = next(s.at_s for s in invocation.timeline if s.status == "Running")
        assert 10 <= invocation.timeline[-1].at_s - running <= 20
        body = state_at(invocation, 1000, epoch_ms=0, account_id="1", region="r")
        assert body is not None
        assert body["alreadyRetriedTimes"] in (0, 1, 2)
        assert body["startedTime"] == int(invocation.appears_at_s * 1000)  # type: ignore[operator]


def test_generator_outcomes_that_never_run_or_never_end() -> None:
    """Expired and Invalid never reach Running; a Running outcome never finishes."""
    expired = expand(_generator(count=5, outcomes={"Expired": 1}), seed=0, index=0)
    assert all([s.status for s in m.timeline] == ["Enqueued", "Expired"] for m in expired)
    endless = expand(_generator(count=5, outcomes={"Running": 1}, retries=1), seed=0, index=0)
    assert all(m.timeline[-1].status == "Running" for m in endless)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"outcomes": {"Done": 1}}, "unknown outcome"),
        ({"outcomes": {"Failed": 0}}, "not all 0"),
        ({"run_s": [5, 1]}, "min <= max"),
        ({"api": "fc3"}, "fc3 generators take none"),
        ({"prefix": "a/b"}, "makes invalid ids"),
        ({"prefix": "x" * 125}, "makes invalid ids"),
    ],
)
def test_bad_generators_name_the_problem(fields: dict[str, Any], message: str) -> None:
    """Validation says what is wrong with a generator stanza."""
    with pytest.raises(ValueError, match=message):
        _generator(count=1, **fields)


def test_generated_ids_may_not_collide() -> None:
    """Two generators (or a generator and an explicit invocation) may not make the same id."""
    stanza = {"service": "media", "function": "transcode", "count": 3}
    with pytest.raises(ValueError, match="used twice"):
        Scenario.model_validate({"generators": [stanza, {**stanza, "id_start": 2}]})
    with pytest.raises(ValueError, match="used twice"):
        Scenario.model_validate(
            {
                "invocations": [{"id": "job-000001", "service": "media", "function": "transcode"}],
                "generators": [stanza],
            }
        )
    Scenario.model_validate({"generators": [stanza, {**stanza, "function": "other"}]})


def test_list_items_leave_out_events_and_payload_unless_asked() -> None:
    """List items drop events (unless ``list_events``) and the payload (unless asked for);
    ``returnPayload`` stays, as in the Get schema."""
    invocation = {
        "id": "job-1",
        "payload": "in",
        "timeline": [
            {"at_s": -5, "status": "Running"},
            {"at_s": 0, "status": "Succeeded", "return_payload": "out"},
        ],
    }
    for list_events in (False, True):
        scenario = Scenario.model_validate(
            {"invocations": [invocation], "list_events": list_events}
        )
        catalog = Catalog(scenario, epoch_ms=10_000)
        entry = catalog.entry((Api.FC2, "demo-service", "demo-function", "job-1"))
        assert entry is not None
        plain = catalog.list_item(entry, 1.0, include_payload=False)
        full = catalog.list_item(entry, 1.0, include_payload=True)
        assert (b'"events"' in plain, b'"events"' in full) == (list_events, list_events)
        assert b'"invocationPayload"' not in plain
        assert b'"invocationPayload": "in"' in full
        assert b'"returnPayload": "out"' in plain
        assert b'"startedTime": 5000' in plain  # 5 s before the emulator's start


def test_submission_is_placed_at_now() -> None:
    """A submission's times count from now; bad bodies are a 400 naming the field."""
    steps = b'[{"at_s": 0, "status": "Running"}, {"at_s": 2, "status": "Failed"}]'
    spec = parse_submission(b'{"id": "sub-1", "timeline": ' + steps + b"}", now_s=10.0)
    assert isinstance(spec, InvocationSpec)
    assert (spec.appears_at_s, [s.at_s for s in spec.timeline]) == (10.0, [10.0, 12.0])
    for body, message in [
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"id": "a b"}', "id"),
        (b'{"id": "a", "timeline": [{"status": "Running"}]}', "timeline.0.at_s"),
    ]:
        denial = parse_submission(body, now_s=0.0)
        assert isinstance(denial, Denial)
        assert denial.http_status == 400
        assert message in denial.message
