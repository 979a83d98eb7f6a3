"""With no routes, log sinks get every transition and every other sink the alert-worthy ones;
``check`` prints the effective routes so nobody has to guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli import main
from watcher.config.load import load_config
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.core.model import Snapshot, Transition, TransitionType
from watcher.core.route import Route, Target, alert_worthy, effective_routes, route

REF = InvocationRef(FunctionRef(Api.FC2, "transcode", "media", None), "job-1")


def change(status: str, previous: str | None, retried: int = 0) -> Transition:
    before = Snapshot(status=previous) if previous else None
    invocation = Invocation.model_validate({"status": status, "alreadyRetriedTimes": retried})
    transitions = decide.diff(before, invocation, ref=REF, observed_ms=0).transitions
    return [t for t in transitions if t.type is TransitionType.STATUS_CHANGED][-1]


def other(kind: TransitionType) -> Transition:
    return Transition(id=f"tr_{kind.value}", type=kind, ref=REF, observed_ms=0)


@pytest.mark.parametrize(
    ("transition", "severity"),
    [
        (change("Failed", "Running", 3), "critical"),
        (change("Expired", "Enqueued"), "critical"),
        (change("Stopped", "Stopping"), "critical"),
        (change("Invalid", None), "critical"),
        (change("Retrying", "Running", 1), "warning"),
        (change("Retrying", "Running", 0), "warning"),
        (change("Retrying", "Running", 2), None),  # the second retry: not again
        (change("Retrying", "Retrying", 1), None),
        (change("Running", "Enqueued"), None),
        (change("Succeeded", "Running"), None),
        (change("Running", None), None),
        (other(TransitionType.STUCK), "warning"),
        (other(TransitionType.NOT_FOUND), "warning"),
        (other(TransitionType.POLL_FAILING), "warning"),
        (other(TransitionType.POLL_RECOVERED), "info"),
        (other(TransitionType.EVENT), None),
    ],
)
def test_alert_worthy(transition: Transition, severity: str | None) -> None:
    assert alert_worthy(transition) == severity


def test_no_routes_sends_everything_to_logs_and_alerts_to_the_rest() -> None:
    """Log sinks get every transition; webhook and robot sinks only the alert-worthy ones."""
    failed, running = change("Failed", "Running"), change("Running", "Enqueued")
    targets = route([failed, running], [], ["log"], ["hook", "ding"])
    assert targets[failed.id] == [
        Target("log"),
        Target("hook", "critical"),
        Target("ding", "critical"),
    ]
    assert targets[running.id] == [Target("log")]


def test_configured_routes_replace_the_defaults() -> None:
    """With routes, the defaults do not apply: only what the routes name is sent."""
    only_log = Route.model_validate({"match": {"status": ["Succeeded"]}, "sinks": ["log"]})
    targets = route([change("Failed", "Running")], [only_log], ["log"], ["hook"])
    assert list(targets.values()) == [[]]


def test_effective_routes_names_the_defaults() -> None:
    """The table ``check`` prints has one row for the log sinks and the alert rows."""
    rows = effective_routes([], ["log"], ["hook", "ding"])
    assert rows[0] == ("every transition", "log", "info")
    assert ("status=Expired|Failed|Invalid|Stopped", "hook, ding", "critical") in rows
    assert any("Retrying" in match for match, _, _ in rows)
    assert any("invocation.stuck" in match for match, _, _ in rows)


CONFIG = """\
fc:
  account_id: "1234567890123456"
  region: cn-hangzhou
state:
  path: {state}
watch:
  - service: media
    function: transcode
    invocations: [job-1]
sinks:
  - name: hook
    type: webhook
    url: http://127.0.0.1:9/hook
  - name: ding
    type: dingtalk
    url: http://127.0.0.1:9/robot/send?access_token=not-a-real-token
"""


def test_sinks_without_routes_or_a_log_sink_are_accepted_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A webhook and a DingTalk sink with no routes is a valid config, and ``check`` shows
    that they get the alert-worthy transitions, without the robot's token."""
    path = tmp_path / "watcher.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db"))
    assert [s.name for s in load_config(path).config.sinks] == ["hook", "ding"]
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "routes (none configured: the defaults):" in out
    assert "hook, ding" in out
    assert "critical" in out
    assert "not-a-real-token" not in out
