"""The emulator's pure parts: signatures, fault planning, timelines, listing, scenario files."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from watcher.core.invocation import Api, FunctionRef
from watcher.devtools.emulator.auth import Denial, SignedRequest, verify
from watcher.devtools.emulator.faults import plan_faults
from watcher.devtools.emulator.listing import ListQuery, list_page, parse_list_query
from watcher.devtools.emulator.scenario import (
    AccessKey,
    FaultSpec,
    InvocationSpec,
    ScenarioError,
    Step,
    load_scenario,
    state_at,
)
from watcher.fc.credentials import Credentials
from watcher.fc.endpoint import resolve_endpoint
from watcher.fc.requests import Operation, request_base, sign
from watcher.fc.signing import SignatureScheme

NOW_S = 1795680000.0
KEYS = (AccessKey(access_key_id="AK", access_key_secret="SK"),)


def _signed(scheme: SignatureScheme, *, skew_s: float = 0.0) -> SignedRequest:
    import email.utils
    import time

    when = NOW_S + skew_s
    prepared = sign(
        request_base(
            operation=Operation.GET,
            method="GET",
            function_ref=FunctionRef(Api.FC2, "fn", "svc", "LATEST"),
            invocation_id="id-1",
            query={"qualifier": "LATEST"},
            endpoint=resolve_endpoint("1", "r", url="http://127.0.0.1:9000"),
            account_id="1",
            credentials=Credentials("AK", "SK"),
            scheme=scheme,
        ),
        http_date=email.utils.formatdate(when, usegmt=True),
        iso_date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
        nonce="n" * 32,
    )
    path, _, _ = str(prepared.url).removeprefix("http://127.0.0.1:9000").partition("?")
    return SignedRequest(
        method="GET",
        raw_path=path,
        query={"qualifier": "LATEST"},
        headers={name: [value] for name, value in prepared.headers.items()},
        body=b"",
    )


@pytest.mark.parametrize("scheme", list(SignatureScheme))
def test_a_correct_signature_verifies(scheme: SignatureScheme) -> None:
    """A request signed by the client's signer passes."""
    assert verify(_signed(scheme), KEYS, now_s=NOW_S, max_skew_s=900) is None


@pytest.mark.parametrize("scheme", list(SignatureScheme))
def test_tampering_is_detected(scheme: SignatureScheme) -> None:
    """Another path, a missing or altered Authorization, or another method is refused."""
    good = _signed(scheme)
    tampered = [
        replace(good, raw_path=good.raw_path.replace("id-1", "id-2")),
        replace(good, method="PUT"),
        replace(good, headers={k: v for k, v in good.headers.items() if k != "authorization"}),
        replace(
            good,
            headers={
                **good.headers,
                "authorization": [good.headers["authorization"][0][:-4] + "AAA="],
            },
        ),
        replace(good, headers={**good.headers, "x-fc-account-id": ["2"]}),
    ]
    for request in tampered:
        denial = verify(request, KEYS, now_s=NOW_S, max_skew_s=900)
        assert denial is not None
        assert denial.code == "SignatureNotMatch"


def test_acs3_refuses_an_unsigned_acs_header_and_a_body_hash_mismatch() -> None:
    """ACS3 requires every x-acs-* header to be signed and the body hash to match."""
    good = _signed(SignatureScheme.ACS3)
    extra = replace(good, headers={**good.headers, "x-acs-extra": ["1"]})
    body = replace(good, body=b"{}")
    for request in (extra, body):
        assert verify(request, KEYS, now_s=NOW_S, max_skew_s=900) is not None


@pytest.mark.parametrize("scheme", list(SignatureScheme))
@pytest.mark.parametrize(
    ("skew_s", "refused"), [(-901, True), (-899, False), (899, False), (901, True)]
)
def test_clock_skew_window(scheme: SignatureScheme, skew_s: float, refused: bool) -> None:
    """Requests dated more than 15 minutes away are refused with 403."""
    denial = verify(_signed(scheme, skew_s=skew_s), KEYS, now_s=NOW_S, max_skew_s=900)
    assert (denial is not None) is refused
    if denial:
        assert denial.http_status == 403
        assert denial.code == "RequestTimeTooSkewed"


def test_fault_plan_respects_window_match_and_every_nth() -> None:
    """Faults fire only inside their window, on matching ids, on every Nth request."""
    faults = (
        FaultSpec(kind="latency", latency_ms=30),
        FaultSpec(kind="latency", latency_ms=20, match="slow-*"),
        FaultSpec(kind="http_error", status=500, every_nth=3),
        FaultSpec(kind="reset", from_s=10, until_s=20),
    )
    rng = random.Random(0)

    def plan(n: int, t: float, target: str) -> tuple[int, str | None]:
        result = plan_faults(faults, elapsed_s=t, request_number=n, target=target, rng=rng)
        return result.latency_ms, result.failure.kind if result.failure else None

    assert plan(1, 0, "a") == (30, None)
    assert plan(1, 0, "slow-1") == (50, None)
    assert plan(3, 0, "a") == (30, "http_error")
    assert plan(4, 15, "a") == (30, "reset")
    assert plan(6, 15, "a") == (30, "http_error")  # the first failing fault wins
    assert plan(4, 20, "a") == (30, None)


def test_fault_probability_is_reproducible_with_a_seed() -> None:
    """The same seed gives the same fault sequence."""
    faults = (FaultSpec(kind="http_error", probability=0.3),)

    def run() -> list[bool]:
        rng = random.Random(42)
        return [
            plan_faults(faults, elapsed_s=0, request_number=n, target="", rng=rng).failure
            is not None
            for n in range(1, 200)
        ]

    first = run()
    assert first == run()
    assert 30 < sum(first) < 90


def test_timeline_state_and_stop() -> None:
    """State follows the timeline; a stop cuts it and appends Stopping and Stopped."""
    spec = InvocationSpec(
        id="job",
        appears_at_s=1,
        timeline=(
            Step(at_s=1, status="Enqueued"),
            Step(at_s=2, status="Running"),
            Step(at_s=4, status="Retrying", error="E1"),
            Step(at_s=5, status="Running", event=False),
            Step(at_s=9, status="Succeeded"),
        ),
    )

    def at(t: float, stopped: float | None = None) -> dict[str, Any] | None:
        return state_at(spec, t, epoch_ms=0, account_id="1", region="r", stopped_at_s=stopped)

    assert at(0.5) is None
    enqueued = at(1)
    assert enqueued is not None and enqueued["status"] == "Enqueued"
    mid = at(5)
    assert mid is not None
    assert mid["status"] == "Running"
    assert mid["alreadyRetriedTimes"] == 1
    assert mid["invocationErrorMessage"] == "E1"
    assert len(mid["events"]) == 3
    done = at(10)
    assert done is not None and done["endTime"] == 9000 and done["durationMs"] == 8000
    stopped = at(10, stopped=3)
    assert stopped is not None
    assert stopped["status"] == "Stopped"
    assert [e["status"] for e in stopped["events"]] == [
        "Enqueued",
        "Running",
        "Stopping",
        "Stopped",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("invocations: [{id: 'a/b'}]", "invocations.0.id"),
        ("faults: [{kind: explode}]", "faults.0.kind"),
        (
            "invocations: [{id: a, timeline: [{at_s: 5, status: X}, {at_s: 1, status: Y}]}]",
            "at_s order",
        ),
        ("seed: [", "not valid YAML"),
    ],
)
def test_bad_scenarios_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    """A bad scenario file gives one line naming the file and the field."""
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value)


def test_missing_scenario_file(tmp_path: Path) -> None:
    """A missing file says so."""
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_bundled_scenarios_load() -> None:
    """Every scenario shipped in config/ and the demo loads."""
    root = Path(__file__).parents[2]
    paths = [
        *root.glob("config/*scenario*.yaml"),
        root / "watcher" / "devtools" / "demo" / "scenario.yaml",
    ]
    assert paths
    for path in paths:
        assert load_scenario(path).invocations


@pytest.mark.parametrize(
    ("api", "query", "expected"),
    [
        (Api.FC2, {}, (50, 0, "")),
        (Api.FC3, {}, (20, 0, "")),
        (Api.FC2, {"limit": "5", "nextToken": "10", "invocationIdPrefix": "a"}, (5, 10, "a")),
        (Api.FC3, {"prefix": "b", "invocationIdPrefix": "a"}, (20, 0, "b")),
        (Api.FC2, {"limit": "x"}, "a numeric parameter is malformed"),
        (Api.FC2, {"limit": "0"}, "limit must be in [1, 100]"),
        (Api.FC3, {"limit": "101"}, "limit must be in [1, 100]"),
        (Api.FC2, {"nextToken": "-1"}, "limit must be in [1, 100]"),
    ],
)
def test_list_query_defaults_and_refusals(
    api: Api, query: dict[str, str], expected: tuple[int, int, str] | str
) -> None:
    """Each API has its own default page size and prefix parameter; bad numbers are a 400."""
    parsed = parse_list_query(api, query)
    if isinstance(expected, str):
        assert isinstance(parsed, Denial)
        assert (parsed.http_status, parsed.code, parsed.message) == (
            400,
            "InvalidArgument",
            expected,
        )
    else:
        assert isinstance(parsed, ListQuery)
        assert (parsed.limit, parsed.offset, parsed.prefix) == expected


def test_list_page_filters_sorts_pages_and_strips_payloads() -> None:
    """Status and start-time filters, start order (or reversed), one page, the next offset."""
    bodies = [
        {"taskId": str(i), "status": s, "startedTime": t, "taskPayload": "p"}
        for i, (s, t) in enumerate(
            [("Running", 30), ("Failed", 10), ("Running", 20), ("Running", 5)]
        )
    ]
    query = parse_list_query(Api.FC3, {"limit": "2", "status": "Running", "startedTimeBegin": "6"})
    assert isinstance(query, ListQuery)
    first = list_page(Api.FC3, query, [dict(b) for b in bodies])
    assert [b["taskId"] for b in first["tasks"]] == ["2", "0"]
    assert first["nextToken"] == ""
    assert all("taskPayload" not in b for b in first["tasks"])
    query = parse_list_query(
        Api.FC2, {"limit": "1", "sortOrderByTime": "desc", "includePayload": "True"}
    )
    assert isinstance(query, ListQuery)
    page = list_page(Api.FC2, query, [dict(b) for b in bodies])
    assert [b["taskId"] for b in page["invocations"]] == ["0"]
    assert page["invocations"][0]["taskPayload"] == "p"
    assert page["nextToken"] == "1"
