"""Config loading: the documented contract parses; every malformed file gets clear lines and 78."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from watcher.cli import EXIT_CONFIG, main
from watcher.config.load import ConfigError, load_config
from watcher.core.invocation import Api
from watcher.fc.signing import SignatureScheme

VALID = """\
fc:
  account_id: "1234567890123456"
  region: cn-hangzhou
  endpoint: http://127.0.0.1:9000
  signature: acs3
  access_key_id: ${TEST_AK}
  access_key_secret: ${TEST_SK}
  security_token: ${TEST_TOKEN:-}
state:
  path: /var/lib/fc-watcher/state.db
poll:
  interval_s: 10
  concurrency: 64
watch:
  - service: demo-service
    function: demo-function
    qualifier: LATEST
    labels: {team: data}
    invocations: [id-1, id-2]
    invocations_file: ids.txt
  - api: fc3
    function: nightly
    invocations: [task-1]
sinks:
  - name: log
    type: log
"""
ENV = {"TEST_AK": "LTAI_CONFIG_KEY", "TEST_SK": "config-secret-value"}


def _write(
    tmp_path: Path, text: str, ids: str | None = "# ids\nid-3\n\nid-4  # trailing\n"
) -> Path:
    path = tmp_path / "watcher.yaml"
    path.write_text(textwrap.dedent(text))
    if ids is not None:
        (tmp_path / "ids.txt").write_text(ids)
    return path


def test_the_documented_example_parses(tmp_path: Path) -> None:
    """The issue's contract config loads: env substitution, ids file, both APIs, labels."""
    loaded = load_config(_write(tmp_path, VALID), env=ENV)
    config = loaded.config
    assert config.fc.signature is SignatureScheme.ACS3
    assert config.fc.access_key_id is not None
    assert config.fc.access_key_id.get_secret_value() == "LTAI_CONFIG_KEY"
    assert config.fc.security_token is not None
    assert config.fc.security_token.get_secret_value() == ""
    ids = [t.ref.invocation_id for t in loaded.tracked]
    assert ids == ["id-1", "id-2", "id-3", "id-4", "task-1"]
    assert loaded.tracked[0].labels == {"team": "data"}
    assert loaded.tracked[-1].ref.function_ref.api is Api.FC3


def test_secrets_never_print(tmp_path: Path) -> None:
    """The loaded config's repr and str show no secret."""
    loaded = load_config(_write(tmp_path, VALID), env=ENV)
    for text in (repr(loaded), str(loaded.config), repr(loaded.config.fc)):
        assert "config-secret-value" not in text
        assert "LTAI_CONFIG_KEY" not in text


def test_substitution_cannot_inject_structure(tmp_path: Path) -> None:
    """A variable's value stays one string even if it looks like YAML."""
    env = {**ENV, "TEST_AK": "x\nstate: {path: /etc/passwd}"}
    loaded = load_config(_write(tmp_path, VALID), env=env)
    assert str(loaded.config.state.path) == "/var/lib/fc-watcher/state.db"


def test_check_and_schema_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` says ok with counts; `schema` prints a JSON Schema naming the contract's keys."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "-c", str(_write(tmp_path, VALID))]) == 0
    assert "5 invocation(s)" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"fc", "state", "poll", "watch", "sinks"} <= set(schema["properties"])


BASE = (
    VALID.replace("${TEST_AK}", "AK").replace("${TEST_SK}", "SK").replace("${TEST_TOKEN:-}", "''")
)

MALFORMED = [
    ("not-yaml", "fc: [unclosed", "not valid YAML"),
    ("tabs", "fc:\n\taccount_id: 1", "not valid YAML"),
    ("empty", "", "top level must be a mapping"),
    ("a-list", "- 1\n- 2", "top level must be a mapping"),
    ("no-fc", BASE.replace("fc:\n", "fcx:\n", 1), "fc: Field required"),
    (
        "no-state",
        BASE.replace("state:\n  path: /var/lib/fc-watcher/state.db\n", ""),
        "state: Field required",
    ),
    ("no-watch", BASE.split("watch:")[0], "watch: Field required"),
    (
        "empty-watch",
        BASE.split("watch:")[0] + "watch: []\n",
        "watch: List should have at least 1 item",
    ),
    ("bad-account", BASE.replace('"1234567890123456"', "abc"), "fc.account_id"),
    ("bad-region", BASE.replace("cn-hangzhou", "Hangzhou!"), "fc.region"),
    ("bad-signature", BASE.replace("signature: acs3", "signature: md5"), "fc.signature"),
    ("unknown-key", BASE.replace("  region:", "  regoin: x\n  region:"), "fc.regoin: Extra inputs"),
    (
        "key-without-secret",
        BASE.replace("  access_key_secret: SK\n", ""),
        "give both access_key_id and access_key_secret",
    ),
    (
        "token-without-key",
        BASE.replace("  access_key_id: AK\n  access_key_secret: SK\n", "").replace(
            "security_token: ''", "security_token: tok"
        ),
        "security_token needs",
    ),
    ("missing-env", VALID, "environment variable TEST_AK is not set"),
    ("negative-interval", BASE.replace("interval_s: 10", "interval_s: -1"), "poll.interval_s"),
    (
        "interval-over-max",
        BASE.replace("interval_s: 10", "interval_s: 10\n  max_interval_s: 5"),
        "max_interval_s must be at least interval_s",
    ),
    ("zero-concurrency", BASE.replace("concurrency: 64", "concurrency: 0"), "poll.concurrency"),
    (
        "string-concurrency",
        BASE.replace("concurrency: 64", "concurrency: lots"),
        "poll.concurrency",
    ),
    (
        "fc2-without-service",
        BASE.replace("  - service: demo-service\n", "  - api: fc2\n"),
        "needs 'service'",
    ),
    (
        "fc3-with-service",
        BASE.replace("  - api: fc3\n", "  - api: fc3\n    service: s\n"),
        "has no 'service'",
    ),
    ("no-invocations", BASE.replace("    invocations: [task-1]\n", ""), "list 'invocations'"),
    (
        "hostile-id",
        BASE.replace("[id-1, id-2]", "[id-1, '../../etc']"),
        "watch[0].invocations[1]: invalid name or id",
    ),
    ("hostile-function", BASE.replace("function: nightly", "function: 'a b'"), "watch[1].function"),
    ("bad-api", BASE.replace("api: fc3", "api: fc4"), "watch[1].api"),
    (
        "duplicate-id",
        BASE.replace("[id-1, id-2]", "[id-1, id-1]"),
        "already tracked by watch[0].invocations[0]",
    ),
    ("missing-ids-file", BASE.replace("ids.txt", "nope.txt"), "cannot read"),
    ("bad-sink-type", BASE.replace("type: log", "type: carrier-pigeon"), "sinks[0]: Input tag"),
    ("duplicate-sink", BASE + "  - name: log\n    type: log\n", "used by another sink"),
    ("labels-not-map", BASE.replace("{team: data}", "[team]"), "watch[0].labels"),
    ("bad-endpoint", BASE.replace("http://127.0.0.1:9000", "ftp://x"), "fc.endpoint"),
    (
        "route-to-nowhere",
        BASE + "routes:\n  - sinks: [pager]\n",
        "routes[0].sinks[0]: no sink is named 'pager'",
    ),
    (
        "bad-template",
        BASE + "routes:\n  - sinks: [log]\n    template: '{oops}'\n",
        "unknown field(s) oops",
    ),
    (
        "bad-whsec",
        BASE + "  - name: hook\n    type: webhook\n    url: http://x\n    secret: abc\n",
        "starts with 'whsec_'",
    ),
    (
        "sink-url-not-http",
        BASE + "  - name: hook\n    type: webhook\n    url: 'file:///etc/passwd'\n",
        "sinks[1].url: must be an http",
    ),
    (
        "webhook-no-url",
        BASE + "  - name: hook\n    type: webhook\n",
        "sinks[1].url: Field required",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_config_is_one_clear_line_and_78(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    message: str,
) -> None:
    """Each mistake exits 78 with lines naming the file, the YAML path and the fix, no traceback."""
    monkeypatch.delenv("TEST_AK", raising=False)
    path = _write(tmp_path, text)
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message in err
    assert str(path) in err
    assert "Traceback" not in err
    assert all(line.startswith("fc-watcher: ") for line in err.strip().splitlines())


def test_malformed_count() -> None:
    """The suite keeps at least 25 malformed configs."""
    assert len(MALFORMED) >= 25


def test_errors_carry_line_numbers(tmp_path: Path) -> None:
    """Validation errors point at the YAML line."""
    text = BASE.replace("concurrency: 64", "concurrency: 0")
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    line = text.splitlines().index("  concurrency: 0") + 1
    assert f"(line {line})" in caught.value.problems[0]


def test_bad_ids_file_names_file_and_line(tmp_path: Path) -> None:
    """A bad id in invocations_file is reported as file:line."""
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, BASE, ids="ok-1\nbad id\n"))
    assert any("ids.txt:2" in problem for problem in caught.value.problems)


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist is one line and 78."""
    assert main(["check", "-c", str(tmp_path / "none.yaml")]) == EXIT_CONFIG
    assert "cannot read the file" in capsys.readouterr().err


def test_bundled_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/watcher.example.yaml loads; its empty key variables fall back to the default chain."""
    from watcher.daemon.build import credential_source
    from watcher.fc.credentials import DefaultChainCredentialSource

    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    loaded = load_config(Path(__file__).parents[2] / "config" / "watcher.example.yaml")
    assert len(loaded.tracked) == 5
    assert isinstance(credential_source(loaded.config), DefaultChainCredentialSource)


def test_secrets_from_files_and_the_credentials_directory(tmp_path: Path) -> None:
    """*_file reads a secret from a file; a relative path is looked up in CREDENTIALS_DIRECTORY."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fc-access-key-secret").write_text("secret-from-systemd\n")
    (tmp_path / "key-id").write_text("LTAI_FROM_FILE")
    text = BASE.replace(
        "  access_key_id: AK\n", f"  access_key_id_file: {tmp_path / 'key-id'}\n"
    ).replace("  access_key_secret: SK\n", "  access_key_secret_file: fc-access-key-secret\n")
    loaded = load_config(_write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert loaded.config.fc.access_key_id is not None
    assert loaded.config.fc.access_key_id.get_secret_value() == "LTAI_FROM_FILE"
    assert loaded.config.fc.access_key_secret is not None
    assert loaded.config.fc.access_key_secret.get_secret_value() == "secret-from-systemd"
    assert "fc.access_key_secret" not in loaded.inline_secrets


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ("  access_key_secret_file: /nonexistent/secret\n", "cannot read /nonexistent/secret"),
        ("  access_key_secret: SK\n  access_key_secret_file: x\n", "not both"),
    ],
)
def test_secret_file_mistakes(tmp_path: Path, replacement: str, message: str) -> None:
    """A missing secret file, or a secret given twice, is a clear config error."""
    with pytest.raises(ConfigError) as caught:
        load_config(
            _write(tmp_path, BASE.replace("  access_key_secret: SK\n", replacement)), env={}
        )
    assert any(message in problem for problem in caught.value.problems)


def test_inline_secrets_in_a_world_readable_file_are_warned_about(tmp_path: Path) -> None:
    """A config holding inline secrets and readable by others gets a warning naming the fix."""
    from structlog.testing import capture_logs

    from watcher.config.load import warn_if_secrets_exposed

    path = _write(tmp_path, BASE)
    path.chmod(0o644)
    loaded = load_config(path, env={})
    assert set(loaded.inline_secrets) >= {"fc.access_key_id", "fc.access_key_secret"}
    with capture_logs() as logs:
        warn_if_secrets_exposed(loaded)
    (warning,) = logs
    assert warning["event"] == "config_readable_by_others"
    assert f"chmod 600 {path}" in warning["fix"]
    assert "SK" not in repr(warning["secrets"])
    path.chmod(0o600)
    with capture_logs() as logs:
        warn_if_secrets_exposed(loaded)
    assert logs == []
    from_env = load_config(_write(tmp_path, VALID), env=ENV)
    assert from_env.inline_secrets == ()


def test_the_state_is_sqlite_or_postgresql_not_both(tmp_path: Path) -> None:
    from watcher.config.models import StateBackendError, StateSettings

    assert StateSettings.model_validate({"path": tmp_path / "s.db"}).sqlite_path().name == "s.db"
    on_pg = StateSettings.model_validate({"url": "postgresql://u:pw@127.0.0.1/db"})
    assert "pw" not in repr(on_pg)
    with pytest.raises(StateBackendError, match="PostgreSQL"):
        on_pg.sqlite_path()
    for both_or_none in ({}, {"path": tmp_path / "s.db", "url": "postgresql://h/db"}):
        with pytest.raises(ValueError, match=r"state\.path .* or state\.url"):
            StateSettings.model_validate(both_or_none)
