"""The commands that write beside a running daemon (``track``, ``silence``, ``redeliver``) on a
PostgreSQL state, as on SQLite: each through the store, and the password printed nowhere."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.store.postgres import open_postgres

pytest_plugins = ["tests.pg"]


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "watcher.yaml"
    text = f"""
        fc: {{account_id: "1234567890123456", region: cn-hangzhou, access_key_id: k,
             access_key_secret: s}}
        state: {{url: '{url}'}}
        watch: [{{service: s, function: f, invocations: [a]}}]
        sinks: [{{name: log, type: log}}, {{name: hook, type: webhook, url: 'http://127.0.0.1:9/'}}]
    """
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return path


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    def call() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "watcher", "--log-format", "json", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    return await asyncio.to_thread(call)


async def test_track_silence_and_redeliver_write_to_postgresql(tmp_path: Path, pg_url: str) -> None:
    store = await open_postgres(pg_url)  # migrates the schema, as the first daemon would
    await store.close()
    config = str(_config(tmp_path, pg_url))
    password = pg_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]

    tracked = await _cli("track", "-c", config, "--service", "s", "--function", "f", "id-1")
    added = await _cli(
        "silence", "add", "-c", config, "--match", "function=f", "--for", "1h",
        "--comment", "maintenance", "-q",
    )  # fmt: skip
    listed = await _cli("silence", "list", "-c", config)
    redelivered = await _cli("redeliver", "-c", config)

    for done in (tracked, added, listed, redelivered):
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr
    assert "tracking 1 new invocation" in tracked.stdout
    silence_id = added.stdout.strip()
    assert silence_id in listed.stdout and "maintenance" in listed.stdout
    assert "0 dead letter(s) queued again" in redelivered.stdout

    store = await open_postgres(pg_url)
    try:
        _, changes = await store.live_changes(0)
        ref = InvocationRef(FunctionRef(Api.FC2, "f", "s"), "id-1")
        assert [(change.ref.key, change.tracked) for change in changes] == [(ref.key, True)]
        silences = await store.list_silences(ended_after_ms=0)
        assert [silence.id for silence in silences] == [silence_id]
    finally:
        await store.close()
