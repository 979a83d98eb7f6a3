"""The monitoring files in deploy/ against the real programs that will read them.

``promtool`` (Debian's ``prometheus`` package) checks the alerting rules, runs their unit tests
(deploy/prometheus/alerts.test.yml: each alert fires when its name says, and not before) and
lints a live ``/metrics`` scraped from ``fc-watcher run`` against the emulator. Every metric
name the rules and the Grafana dashboard use must be one that live page exports, so a renamed
metric breaks this test rather than an operator's dashboard. The dashboard has no program here
to load it: its structure is checked as Grafana reads it, and its queries are parsed by
promtool as recording rules. Without promtool its tests skip, and the run's summary says so.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EmulatorFactory, Receiver
from tests.integration.daemon import route_all_to_webhook, run_cli, stop, write_config
from tests.programs import find_program

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
PROMETHEUS_EXAMPLE = ROOT / "deploy" / "prometheus" / "prometheus.example.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "fc-watcher.json"
DEADLINE_S = 30.0
IDS = ["mon-1", "mon-2"]
SCRIPT = [{"id": i, "timeline": [{"at_s": 0, "status": "Failed"}]} for i in IDS]
METRIC = re.compile(r"\bfc_watcher_[a-z_]+")
SEVERITIES = {"critical", "warning", "info"}

AWAITED: dict[str, str] = {
    "fc_watcher_ready": "proposed: 1 while /readyz answers 200, 0 while it answers 503",
    "fc_watcher_tracked": "TrackingCollector in watcher/daemon/gauges.py, not registered yet",
    "fc_watcher_interval_stretch_ratio": "TrackingCollector, not registered yet",
    "fc_watcher_api_demand_per_second": "TrackingCollector, not registered yet",
}
"""Names the files may use that a live /metrics does not export yet, and why. Each but the
proposed readiness gauge must at least be defined in watcher/, so a typo cannot hide here."""

REQUIRED_ON_DASHBOARD = {
    "fc_watcher_polls_total",
    "fc_watcher_api_requests_total",
    "fc_watcher_api_latency_seconds_bucket",
    "fc_watcher_transitions_total",
    "fc_watcher_deliveries_total",
    "fc_watcher_sink_up",
    "fc_watcher_outbox_depth",
    "fc_watcher_outbox_oldest_age_seconds",
    "fc_watcher_dead_letters",
    "fc_watcher_scheduling_lag_seconds_bucket",
    "fc_watcher_tracked",
    "fc_watcher_invocations",
    "fc_watcher_interval_stretch_ratio",
}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = find_program("promtool", package="prometheus")
    return subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel but the rows, which only group the others."""
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def panel_queries() -> list[str]:
    """The PromQL of every panel's targets."""
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def dashboard_queries() -> list[str]:
    """Every query of the dashboard: the panels' PromQL and the variables' queries (Grafana's
    ``label_values(...)``, which is not PromQL but names a metric all the same)."""
    variables = dashboard()["templating"]["list"]
    return panel_queries() + [v["query"]["query"] for v in variables if v["type"] == "query"]


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_the_rules_unit_tests_pass() -> None:
    """alerts.test.yml: a sink down past its hold fires FCWatcherSinkDown, new dead letters
    fire FCWatcherDeadLetters, a redelivery does not, and so on for every alert."""
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules()} - fired == set()


def test_every_rule_says_how_bad_what_and_what_to_run() -> None:
    for rule in rules():
        name = rule["alert"]
        assert "for" in rule, f"{name}: no hold (`for:`)"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert "fc-watcher" in annotations["runbook"], f"{name}: the runbook names no command"


def test_the_example_prometheus_config_loads_the_rules() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_EXAMPLE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "alerts.yml" in checked.stdout  # promtool followed rule_files to our rules


def test_the_dashboard_is_one_grafana_imports() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int)
    assert board["uid"]
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    uses_it = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["instance"]["datasource"] == uses_it
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"
    for panel in panels():
        title = panel["title"]
        assert panel["type"] in {"timeseries", "stat"}, title
        assert panel["datasource"] == uses_it, title
        assert panel["targets"], f"{title}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{title}: a target without an expr"
            assert target.get("datasource", uses_it) == uses_it, title


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    used = {name for expr in dashboard_queries() for name in METRIC.findall(expr)}
    assert REQUIRED_ON_DASHBOARD - used == set()


def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables given values, as a recording rule: promtool parses
    it, so a bracket or a function name gone wrong fails here, not in a panel."""
    grafana = {"$__rate_interval": "5m", "$instance": ".*"}
    recorded = []
    for number, expr in enumerate(panel_queries()):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not fill in: {expr}"
        recorded.append({"record": f"dashboard:query_{number}", "expr": expr})
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": recorded}]}))
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_promtool_finds_nothing_to_fix_in_a_live_metrics_page(live_metrics: str) -> None:
    checked = promtool("check", "metrics", stdin=live_metrics)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


async def test_every_metric_the_files_use_is_exported(live_metrics: str) -> None:
    exported = {
        sample.name
        for family in text_string_to_metric_families(live_metrics)
        for sample in family.samples
    }
    used = set(METRIC.findall(RULES.read_text()))
    used |= {name for expr in dashboard_queries() for name in METRIC.findall(expr)}
    missing = used - exported - set(AWAITED)
    assert missing == set(), f"used but not on a live /metrics: {sorted(missing)}"
    source = "".join(path.read_text() for path in (ROOT / "watcher").rglob("*.py"))
    for name in set(AWAITED) - {"fc_watcher_ready"}:
        assert f'"{name}"' in source, f"{name} is awaited but defined nowhere in watcher/"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def live_metrics(start_emulator: EmulatorFactory, receiver: Receiver, tmp_path: Path) -> str:
    """The /metrics page of ``fc-watcher run`` once it has polled, recorded transitions and
    delivered them to a webhook, so the delivery and backlog series exist; the daemon is
    stopped before the test runs promtool."""
    find_program("promtool", package="prometheus")  # no daemon started to skip anyway
    emu = await start_emulator(invocations=SCRIPT)
    port = _free_port()
    config = write_config(tmp_path, emu.url, IDS)
    route_all_to_webhook(config, receiver.url)
    document = json.loads(config.read_text())
    document["http"] = {"listen": f"127.0.0.1:{port}"}
    config.write_text(json.dumps(document))
    process = await run_cli("run", "-c", str(config), stdout=tmp_path / "run.log")
    try:
        return await _scrape_once_delivered(f"http://127.0.0.1:{port}/metrics", process)
    finally:
        if await stop(process) != 0:
            pytest.fail(f"fc-watcher run exited {process.returncode}")


async def _scrape_once_delivered(url: str, process: asyncio.subprocess.Process) -> str:
    """Scrape ``url`` until every series this module needs is there; fail after DEADLINE_S
    naming the ones that never appeared."""
    wanted = ("fc_watcher_deliveries_total{", "fc_watcher_outbox_depth{", "fc_watcher_sink_up{")
    deadline = time.monotonic() + DEADLINE_S
    text = ""
    async with aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                pytest.fail(f"fc-watcher run exited {process.returncode} before the scrape")
            try:
                async with session.get(url) as response:
                    text = await response.text()
            except aiohttp.ClientError:
                text = ""  # not listening yet
            missing = [series for series in wanted if series not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"{url}: {missing} not within {DEADLINE_S:g} s; last: {text[-1500:]}")
            await asyncio.sleep(0.1)
