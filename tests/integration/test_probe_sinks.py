"""``fc-watcher check --probe-sinks`` against real sockets: one that listens, one closed port,
one host that cannot resolve (``.invalid`` never does, RFC 2606)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.cli import EXIT_FAILURE, EXIT_OK, main

SECRETS = ("s3cret-pw", "TOKEN-in-path", "key-in-query")


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel completes the handshake; nothing
    is read or written)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed when this returns: nothing listens


def _config(tmp_path: Path, sinks: list[dict[str, object]]) -> Path:
    document = {
        "fc": {"account_id": "1", "region": "cn-hangzhou"},
        "state": {"path": str(tmp_path / "state.db")},
        "watch": [{"service": "svc", "function": "fn", "invocations": ["job-1"]}],
        "sinks": [{"name": "log", "type": "log"}, *sinks],
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(document))
    return path


def test_probe_sinks_names_each_failure_and_prints_no_secret(
    tmp_path: Path, listening_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listening: ok; closed: refused; unresolvable: does not resolve; one line each, exit 1,
    and neither the URL's credentials nor its path or query appear."""
    tail = f"/hooks/{SECRETS[1]}?key={SECRETS[2]}"
    config = _config(
        tmp_path,
        [
            {
                "name": "up",
                "type": "webhook",
                "url": f"http://user:{SECRETS[0]}@127.0.0.1:{listening_port}{tail}",
            },
            {"name": "closed", "type": "webhook", "url": f"http://127.0.0.1:{_closed_port()}/x"},
            {"name": "nowhere", "type": "slack", "url": f"https://hooks.example.invalid{tail}"},
        ],
    )
    assert main(["check", "-c", str(config)]) == EXIT_OK  # off by default: no probe
    assert "sink probes" not in capsys.readouterr().out
    assert main(["check", "-c", str(config), "--probe-sinks"]) == EXIT_FAILURE
    captured = capsys.readouterr()
    out = captured.out
    lines = {line.split()[0]: line for line in out.split("sink probes", 1)[1].splitlines()[1:]}
    assert set(lines) == {"up", "closed", "nowhere"}  # the log sink is not probed
    assert f"http://127.0.0.1:{listening_port}/..." in lines["up"]
    assert "ok: connects" in lines["up"]
    assert "refused" in lines["closed"]
    assert "does not resolve" in lines["nowhere"]
    assert "https://hooks.example.invalid/..." in lines["nowhere"]
    for secret in SECRETS:
        assert secret not in out + captured.err


def test_probe_sinks_dns_only_and_all_reachable(
    tmp_path: Path, listening_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--probe-sinks dns`` only resolves (a closed port passes); every sink fine: exit 0."""
    config = _config(
        tmp_path,
        [
            {"name": "up", "type": "webhook", "url": f"http://127.0.0.1:{listening_port}/"},
            {"name": "closed", "type": "webhook", "url": f"http://127.0.0.1:{_closed_port()}/"},
            {"name": "lines", "type": "file", "path": str(tmp_path / "out.jsonl")},
        ],
    )
    assert main(["check", "-c", str(config), "--probe-sinks", "dns"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("ok: resolves") == 2
    assert "not probed" in out  # a file sink has no host
