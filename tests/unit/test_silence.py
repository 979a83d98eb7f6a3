"""Silences, pure: which transitions a silence holds back (its window, its matchers, globs and
labels), what is left of their routes, and how matchers, durations, times and API bodies are
checked."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import Transition, TransitionType
from watcher.core.route import RouteMatch, Target, matches
from watcher.core.silence import (
    Silence,
    SilenceError,
    check_silence,
    describe,
    format_ms,
    hold_back,
    matchers_json,
    parse_duration_ms,
    parse_matchers,
    parse_time_ms,
    silencer_of,
)
from watcher.daemon.silences import matcher_pairs, parse_window, silence_request

T0 = 1_796_000_000_000
NAMES = {
    "starts": "--starts",
    "ends": "--until",
    "duration": "--for",
    "comment": "--comment",
    "author": "--author",
}
STATUSES = ["Running", "Retrying", "Failed", "Succeeded", "Expired"]
FUNCTIONS = ["transcode", "transcode-hd", "encode", "thumbs"]


def transition(
    observed_ms: int = T0,
    *,
    function: str = "transcode",
    status: str | None = "Failed",
    previous: str | None = "Running",
    kind: TransitionType = TransitionType.STATUS_CHANGED,
    labels: dict[str, str] | None = None,
    service: str = "media",
    qualifier: str | None = "LATEST",
    tid: str = "tr-1",
) -> Transition:
    ref = InvocationRef(FunctionRef(Api.FC2, function, service, qualifier), "inv-1")
    return Transition(
        id=tid,
        type=kind,
        ref=ref,
        observed_ms=observed_ms,
        status=status,
        previous_status=previous,
        labels=labels or {},
    )


def silence(
    match: RouteMatch | None = None,
    starts_ms: int = T0,
    ends_ms: int = T0 + 3_600_000,
    *,
    expired_ms: int = 0,
    sid: str = "s1",
) -> Silence:
    return Silence(
        sid,
        match or RouteMatch(function="transcode"),
        starts_ms,
        ends_ms,
        "re-encode backlog",
        "alice",
        starts_ms,
        expired_ms,
    )


def pairs(*items: str) -> RouteMatch:
    return parse_matchers(matcher_pairs(list(items), field="--match"))


# -- the window ---------------------------------------------------------------------------------


@given(
    starts=st.integers(0, 10_000),
    length=st.integers(1, 10_000),
    expired_after=st.one_of(st.none(), st.integers(0, 20_000)),
    observed=st.integers(-1_000, 30_000),
)
def test_a_silence_holds_exactly_the_matching_transitions_observed_while_it_is_in_force(
    starts: int, length: int, expired_after: int | None, observed: int
) -> None:
    """[start, end) and not expired: the start is in, the end and the expiry are out."""
    expired_ms = 0 if expired_after is None else T0 + starts + expired_after
    held = silence(starts_ms=T0 + starts, ends_ms=T0 + starts + length, expired_ms=expired_ms)
    end = T0 + starts + length if expired_after is None else min(T0 + starts + length, expired_ms)
    inside = T0 + starts <= T0 + observed < end
    assert held.holds(transition(T0 + observed)) is inside
    assert silencer_of(transition(T0 + observed), [held]) == ("s1" if inside else None)
    assert held.holds(transition(T0 + observed, function="thumbs")) is False


@given(
    function=st.sampled_from(FUNCTIONS),
    status=st.sampled_from(STATUSES),
    previous=st.sampled_from([None, *STATUSES]),
    team=st.sampled_from([None, "media", "ops"]),
    wanted_function=st.sampled_from(["transcode*", "*", "encode", "t?umbs", None]),
    wanted_status=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2, unique=True),
    wanted_team=st.sampled_from([None, "media"]),
)
def test_inside_its_window_a_silence_holds_what_its_route_match_matches(
    function: str,
    status: str,
    previous: str | None,
    team: str | None,
    wanted_function: str | None,
    wanted_status: list[str],
    wanted_team: str | None,
) -> None:
    """The matchers are the routes' own: a silence holds what a route with them would match."""
    given_pairs = ["status=" + "|".join(wanted_status)]
    given_pairs += [f"function={wanted_function}"] if wanted_function else []
    given_pairs += [f"label.team={wanted_team}"] if wanted_team else []
    match = pairs(*given_pairs)
    labels = {"team": team} if team else {}
    seen = transition(T0 + 5, function=function, status=status, previous=previous, labels=labels)
    expected = (
        (wanted_function is None or _glob(function, wanted_function))
        and status in wanted_status
        and (wanted_team is None or team == wanted_team)
    )
    assert silence(match).holds(seen) is expected
    assert matches(match, seen) is expected


def _glob(name: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    if "?" in pattern:
        return len(name) == len(pattern) and all(
            p in ("?", c) for p, c in zip(pattern, name, strict=True)
        )
    return name == pattern


def test_globs_cover_service_and_qualifier_and_labels_are_exact() -> None:
    match = pairs("service=med*", "qualifier=prod-[ab]", "label.team=media")
    labels = {"team": "media", "tier": "gold"}
    assert silence(match).holds(transition(service="media", qualifier="prod-a", labels=labels))
    assert not silence(match).holds(transition(service="ops", qualifier="prod-a", labels=labels))
    assert not silence(match).holds(transition(service="media", qualifier="prod-c", labels=labels))
    assert not silence(match).holds(
        transition(service="media", qualifier="prod-a", labels={"team": "media-x"})
    )
    assert not silence(match).holds(transition(service="media", qualifier="prod-a"))


@given(st.permutations([("a", 10), ("b", 30), ("c", 30), ("d", 20)]))
def test_of_several_silences_the_one_ending_last_is_named_whatever_their_order(
    order: list[tuple[str, int]],
) -> None:
    silences = [silence(ends_ms=T0 + end * 1000, sid=sid) for sid, end in order]
    assert silencer_of(transition(T0 + 1), silences) == "b"


@given(
    st.lists(
        st.tuples(st.sampled_from(FUNCTIONS), st.sampled_from(STATUSES), st.integers(-50, 150)),
        max_size=12,
    )
)
def test_hold_back_keeps_only_the_log_sinks_of_held_transitions_and_names_their_silence(
    seen: list[tuple[str, str, int]],
) -> None:
    """Held: log sinks only, and its silence named; not held: its routes untouched."""
    held = silence(pairs("function=transcode*", "status=Failed"), T0, T0 + 100)
    transitions = [
        transition(T0 + at, function=fn, status=status, tid=f"t{n}")
        for n, (fn, status, at) in enumerate(seen)
    ]
    routes = {
        t.id: [Target("log"), Target("hook", "critical"), Target("ding")] for t in transitions
    }
    kept, silenced = hold_back(transitions, routes, [held], log_sinks={"log"})
    for t, (fn, status, at) in zip(transitions, seen, strict=True):
        is_held = fn.startswith("transcode") and status == "Failed" and 0 <= at < 100
        assert (t.id in silenced) is is_held
        assert [x.sink for x in kept[t.id]] == (["log"] if is_held else ["log", "hook", "ding"])
    assert set(silenced.values()) <= {"s1"}


def test_hold_back_without_silences_changes_nothing() -> None:
    routes = {"t": [Target("hook", "critical")]}
    assert hold_back([transition(tid="t")], routes, [], ["log"]) == (routes, {})


def test_state_follows_start_end_and_expiry() -> None:
    planned = silence(starts_ms=T0 + 10, ends_ms=T0 + 20)
    assert [planned.state_at(T0 + t) for t in (0, 10, 19, 20)] == [
        "pending",
        "active",
        "active",
        "expired",
    ]
    cut_short = silence(starts_ms=T0, ends_ms=T0 + 20, expired_ms=T0 + 5)
    assert (cut_short.ended_ms, cut_short.state_at(T0 + 5)) == (T0 + 5, "expired")


# -- matchers -----------------------------------------------------------------------------------


def test_matchers_as_people_type_them() -> None:
    match = pairs(
        "type=status_changed",
        "status=failed|Expired",
        "status=Stopped",
        "previous_status=null",
        "function=transcode*",
        "labels.team=media",
        "label.tier=gold",
    )
    assert matchers_json(match) == {
        "type": ["invocation.status_changed"],
        "status": ["Failed", "Expired", "Stopped"],
        "previous_status": [None],
        "function": "transcode*",
        "labels": {"team": "media", "tier": "gold"},
    }
    assert describe(match) == (
        "type=invocation.status_changed status=Failed|Expired|Stopped previous_status=null "
        "function=transcode* label.team=media label.tier=gold"
    )
    assert RouteMatch.model_validate(matchers_json(match)) == match


def test_matchers_as_json_objects_and_lists() -> None:
    as_object = {"function": "transcode", "status": ["Failed"], "labels": {"team": "media"}}
    as_list = [{"name": "function", "value": "transcode"}, "status=Failed", "label.team=media"]
    assert parse_matchers(matcher_pairs(as_object)) == parse_matchers(matcher_pairs(as_list))


@pytest.mark.parametrize(
    ("given_pairs", "message"),
    [
        (["fn=transcode"], "unknown matcher 'fn'"),
        (["function=a", "function=b"], "matcher function given twice"),
        (["label.team=a", "labels.team=b"], "given twice"),
        (["status=Faild"], "'Faild' is not one of"),
        (["type=invocation.nope"], "is not one of"),
        (["function=a b"], "is not a name or glob"),
        (["label.=x"], "unknown matcher 'label.'"),
        ([], "at least one matcher"),
    ],
)
def test_bad_matchers_say_which(given_pairs: list[str], message: str) -> None:
    with pytest.raises(SilenceError, match=message):
        pairs(*given_pairs)


def test_a_matcher_without_equals_is_refused() -> None:
    with pytest.raises(SilenceError, match="is not NAME=VALUE"):
        matcher_pairs(["function"], field="--match")


# -- times and the whole request ----------------------------------------------------------------


@given(st.integers(1, 10**6), st.sampled_from([("s", 1000), ("m", 60_000), ("h", 3_600_000)]))
def test_durations_count_in_their_unit(count: int, unit: tuple[str, int]) -> None:
    assert parse_duration_ms(f"{count}{unit[0]}", "--for") == count * unit[1]


@pytest.mark.parametrize("text", ["0h", "0", "-1h", "2x", "h", "", "1h-", 0, -5])
def test_a_duration_not_over_zero_or_garbled_is_refused(text: object) -> None:
    with pytest.raises(SilenceError, match="--for"):
        parse_duration_ms(text, "--for")


def test_compound_durations_and_times_with_zones() -> None:
    assert parse_duration_ms("1d2h30m", "--for") == 95_400_000
    assert format_ms(parse_time_ms("2026-12-07T16:00:00+08:00", "--until")) == (
        "2026-12-07T08:00:00Z"
    )
    with pytest.raises(SilenceError, match="no time zone"):
        parse_time_ms("2026-12-07T08:00:00", "--until")
    with pytest.raises(SilenceError, match="is not a time"):
        parse_time_ms("tomorrow", "--until")


def _check(starts: Any = None, ends: Any = None, duration: Any = None, **kw: Any) -> Any:
    window = parse_window(starts, ends, duration, NAMES)
    fields = {"comment": "backlog", "author": "alice", **kw}
    return check_silence(
        match=RouteMatch(function="x"), window=window, now_ms=T0, names=NAMES, **fields
    )


def test_a_silence_starts_now_by_default_and_ends_after_its_duration() -> None:
    spec = _check(duration="2h")
    assert (spec.starts_ms, spec.ends_ms, spec.comment, spec.author) == (
        T0,
        T0 + 7_200_000,
        "backlog",
        "alice",
    )
    later = _check(starts=format_ms(T0 + 60_000), duration="1m")
    assert (later.starts_ms, later.ends_ms) == (T0 + 60_000, T0 + 120_000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs an end: --for"),
        ({"ends": format_ms(T0 + 60_000), "duration": "1h"}, "--until or --for, not both"),
        ({"ends": format_ms(T0 - 60_000)}, "already past"),
        ({"starts": format_ms(T0 + 60_000), "ends": format_ms(T0 + 30_000)}, "after the start"),
        ({"duration": "1h", "comment": "  "}, "needs --comment"),
        ({"duration": "1h", "comment": None}, "needs --comment"),
        ({"duration": "1h", "author": ""}, "needs --author"),
        ({"duration": "1h", "comment": "x" * 1001}, "keep it to 1000"),
    ],
)
def test_a_silence_needs_an_end_in_the_future_and_a_comment(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SilenceError, match=message):
        _check(**kwargs)


def test_an_api_body_is_checked_with_its_own_field_names() -> None:
    spec = silence_request(
        {"matchers": {"function": "transcode"}, "duration": "30m", "comment": "c"}, T0
    )
    assert (spec.author, spec.ends_ms - spec.starts_ms) == ("api", 1_800_000)
    for body, message in [
        ({"matchers": {"function": "x"}, "comment": "c"}, '"duration" .* or "endsAt"'),
        ({"matchers": {"function": "x"}, "duration": "1h", "coment": "c"}, "unknown field"),
        ({"duration": "1h", "comment": "c"}, '"matchers" is required'),
        ({"matchers": "function=x", "duration": "1h", "comment": "c"}, "object or a list"),
        (["function=x"], "JSON object"),
    ]:
        with pytest.raises(SilenceError, match=message):
            silence_request(body, T0)


def test_hold_back_copes_with_many_silences_in_any_order() -> None:
    rng = random.Random(7)
    silences = [
        silence(pairs(f"function={fn}"), T0, T0 + rng.randint(1, 100), sid=f"s{n:02d}")
        for n, fn in enumerate(FUNCTIONS * 3)
    ]
    seen = [transition(T0, function=fn, tid=fn) for fn in FUNCTIONS]
    _, silenced = hold_back(seen, {}, silences, ["log"])
    for fn in FUNCTIONS:
        candidates = [s for s in silences if s.match.function == fn]
        latest = max(s.ended_ms for s in candidates)
        assert silenced[fn] == min(s.id for s in candidates if s.ended_ms == latest)
