"""``fc-watcher status`` on real state DBs: what it calls an invocation the watcher let go or
FC forgot, a config with one bad id, 100,000 invocations paged and streamed, and the last-poll
times a running daemon persists for it."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.integration.daemon import (
    ROOT,
    committed,
    read_log,
    run_cli,
    stop,
    wait_until,
)
from tests.integration.daemon import (
    write_config as write_emulator_config,
)
from watcher.cli import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, main
from watcher.core import decide
from watcher.core.invocation import Api, FunctionRef, Invocation, InvocationRef
from watcher.daemon.polled import record_changed, record_polled_every
from watcher.store.errors import StateStoreError
from watcher.store.sqlite import SqliteStore

FN = FunctionRef(Api.FC2, "fn", "svc", "LATEST")
RUNNING = [{"at_s": 0, "status": "Running"}]


def _config(tmp_path: Path, ids: list[str], **watch: Any) -> Path:
    document = {
        "fc": {"account_id": "1", "region": "cn-hangzhou"},
        "state": {"path": str(tmp_path / "state.db")},
        "watch": [{"service": "svc", "function": "fn", "invocations": ids, **watch}],
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


async def _cli(*args: str) -> int:
    """``fc-watcher args`` in a thread: a command may run its own event loop, as it does
    beside a daemon."""
    return await asyncio.to_thread(main, list(args))


def _line(text: str, invocation_id: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"svc/fn/{invocation_id} ")]
    return line


async def _commit(store: SqliteStore, ref: InvocationRef, result: decide.DiffResult) -> None:
    await store.commit(ref, result.snapshot, transitions=result.transitions, routes={}, now_ms=1000)


async def _running(store: SqliteStore, invocation_id: str) -> decide.DiffResult:
    ref = InvocationRef(FN, invocation_id)
    body = Invocation.model_validate({"status": "Running"})
    result = decide.diff(None, body, ref=ref, observed_ms=1000)
    await _commit(store, ref, result)
    return result


async def test_status_calls_an_invocation_a_reload_removed_not_tracked(
    start_emulator: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Beside a running daemon, after SIGHUP dropped job-2 from the config: job-2 is "Running
    (not tracked)" in the table and ``"tracked": false`` in JSON; job-1 is plain Running."""
    emu = await start_emulator(invocations=[{"id": i, "timeline": RUNNING} for i in ("j1", "j2")])
    config = write_emulator_config(tmp_path, emu.url, ["j1", "j2"])
    log = tmp_path / "run.log"
    process = await run_cli("run", "-c", str(config), stdout=log)
    try:
        await wait_until(lambda: set(committed(tmp_path / "state.db")) == {"j1", "j2"}, "both")
        document = json.loads(config.read_text())
        document["watch"][0]["invocations"] = ["j1"]
        config.write_text(json.dumps(document))
        process.send_signal(signal.SIGHUP)
        await wait_until(
            lambda: any(e["event"] == "config_reloaded" for e in read_log([log])), "reload"
        )
        assert await _cli("status", "-c", str(config)) == EXIT_OK
        table = capsys.readouterr().out
        assert await _cli("status", "-c", str(config), "--json") == EXIT_OK
        report = json.loads(capsys.readouterr().out)
    finally:
        assert await stop(process) == 0
    prefix = "demo-service/demo-function"
    (j1,) = [line for line in table.splitlines() if line.startswith(f"{prefix}/j1 ")]
    (j2,) = [line for line in table.splitlines() if line.startswith(f"{prefix}/j2 ")]
    assert "Running (not tracked)" in j2
    assert "Running" in j1
    assert "not tracked" not in j1
    tracked = {row["invocationId"]: row["tracked"] for row in report["invocations"]}
    assert tracked == {"j1": True, "j2": False}


async def test_status_calls_an_invocation_fc_forgot_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen Running, then not found until reported: "gone (not found)", and a problem, so it is
    listed before the invocations that are fine."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await _running(store, "a-fine")
    before = (await _running(store, "b-gone")).snapshot
    for _ in range(5):
        result = decide.not_found(
            before, ref=InvocationRef(FN, "b-gone"), observed_ms=2000, report_after=5
        )
        await _commit(store, InvocationRef(FN, "b-gone"), result)
        before = result.snapshot
    await store.close()
    assert before.not_found_reported
    config = _config(tmp_path, ["a-fine", "b-gone"])
    assert await _cli("status", "-c", str(config)) == EXIT_OK
    table = capsys.readouterr().out
    assert "gone (not found)" in _line(table, "b-gone")
    assert "Running" not in _line(table, "b-gone")
    assert table.index("svc/fn/b-gone") < table.index("svc/fn/a-fine")  # problems first
    assert "invocations: 2, 1 with problems" in table
    assert await _cli("status", "-c", str(config), "--json") == EXIT_OK
    rows = {r["invocationId"]: r for r in json.loads(capsys.readouterr().out)["invocations"]}
    assert (rows["b-gone"]["gone"], rows["a-fine"]["gone"]) == (True, False)


async def test_status_goes_on_past_one_bad_id_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One bad line in an ids file: a one-line warning with the count, the table, exit 0. A
    config whose state path cannot be read is still the config error it was."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await _running(store, "job-1")
    await store.close()
    (tmp_path / "ids.txt").write_text("job-1\nnot an id!\n")
    config = _config(tmp_path, [], invocations_file="ids.txt")
    assert await _cli("check", "-c", str(config)) == EXIT_CONFIG  # the config is still wrong
    capsys.readouterr()
    assert await _cli("status", "-c", str(config)) == EXIT_OK
    captured = capsys.readouterr()
    (warning,) = captured.err.splitlines()
    assert "warning" in warning
    assert "1 problem(s)" in warning
    assert _line(captured.out, "job-1").split()[1] == "Running"  # unknown config: no marking

    document = json.loads(config.read_text())
    document["state"] = {"path": 42, "retention": "soon"}
    config.write_text(json.dumps(document))
    assert await _cli("status", "-c", str(config)) == EXIT_CONFIG
    assert "warning" not in capsys.readouterr().err


def _hundred_thousand(tmp_path: Path) -> Path:
    """A state DB with 100,000 invocations, ten of them Failed, made directly."""
    path = tmp_path / "state.db"
    sqlite3.connect(path).close()
    asyncio.run(_migrate(path))
    rows = [
        (
            InvocationRef(FN, f"job-{n:06d}").key,
            "fc2",
            "svc",
            "fn",
            "LATEST",
            f"job-{n:06d}",
            "Failed" if n % 10_000 == 7 else "Running",
        )
        for n in range(100_000)
    ]
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO invocations (key, api, service, function, qualifier, invocation_id, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()
    return _config(tmp_path, ["job-000000"])


async def _migrate(path: Path) -> None:
    await (await SqliteStore.open(path)).close()


def test_status_pages_100000_invocations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default table shows the ten failures first, 50 rows and a "more" line; --limit
    changes the count; --all prints every row; --json is one valid document of all of them."""
    config = str(_hundred_thousand(tmp_path))
    assert main(["status", "-c", config]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("svc/fn/")]
    assert len(rows) == 50
    assert len(lines) <= 50 + 6
    assert all(" Failed" in row for row in rows[:10])
    assert "… 99950 more (use --all or --limit)" in lines
    assert main(["status", "-c", config, "--limit", "3"]) == EXIT_OK
    assert "… 99997 more (use --all or --limit)" in capsys.readouterr().out
    assert main(["status", "-c", config, "--all"]) == EXIT_OK
    text = capsys.readouterr().out
    assert sum(line.startswith("svc/fn/job-") for line in text.splitlines()) == 100_000
    assert "more (use" not in text
    assert main(["status", "-c", config, "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert len(report["invocations"]) == 100_000
    assert len({row["invocationId"] for row in report["invocations"]}) == 100_000
    assert main(["status", "-c", config, "--json", "--limit", "3"]) == EXIT_USAGE


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_status_json_memory_does_not_grow_with_the_table(tmp_path: Path) -> None:
    """--json on 100,000 invocations peaks far below the 420 MB it took when the whole report
    was built in memory (a loose bound: the interpreter and the package take about 60 MB).

    The peak is the child's VmHWM, which counts from its exec; ``ru_maxrss`` would start from
    this (forked) test process's own size."""
    config = str(_hundred_thousand(tmp_path))
    script = (
        "import sys; from pathlib import Path; from watcher.cli import main; "
        f"code = main(['status', '-c', {config!r}, '--json']); "
        "print(Path('/proc/self/status').read_text(), file=sys.stderr); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    (peak,) = [line for line in done.stderr.splitlines() if line.startswith("VmHWM:")]
    peak_mib = int(peak.split()[1]) / 1024  # "VmHWM:   61234 kB"
    assert peak_mib < 150


class _Scheduler:
    """Stands in for the scheduler: last-poll times, as a fresh dict per call as it gives."""

    def __init__(self, times: dict[str, int]) -> None:
        self.times = times

    def last_polled_ms(self) -> dict[str, int]:
        return dict(self.times)


class _Recording:
    """A store that writes through to a real one and keeps what each write carried."""

    def __init__(self, store: SqliteStore | None) -> None:
        self.store = store
        self.writes: list[dict[str, int]] = []

    async def record_polled(self, last_polled_ms: Mapping[str, int]) -> None:
        self.writes.append(dict(last_polled_ms))
        if self.store is None:
            raise StateStoreError("state DB x is locked by another process")
        await self.store.record_polled(last_polled_ms)


def _polled(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT invocation_id, last_polled_ms FROM invocations"))
    finally:
        db.close()


async def test_last_poll_times_are_written_when_they_moved_and_only_then(tmp_path: Path) -> None:
    """The first round writes every time, an unchanged round does not write at all, the next
    writes only the time that moved; a failed write is tried again on the next round."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await _running(store, "a")
    await _running(store, "b")
    ka, kb = InvocationRef(FN, "a").key, InvocationRef(FN, "b").key
    scheduler, recording = _Scheduler({ka: 5000, kb: 6000}), _Recording(store)
    written = await record_changed(recording, scheduler, {})
    assert _polled(tmp_path / "state.db") == {"a": 5000, "b": 6000}
    written = await record_changed(recording, scheduler, written)
    scheduler.times[ka] = 9000
    written = await record_changed(recording, scheduler, written)
    assert recording.writes == [{ka: 5000, kb: 6000}, {ka: 9000}]
    assert _polled(tmp_path / "state.db") == {"a": 9000, "b": 6000}

    scheduler.times[kb] = 9500
    failing = _Recording(None)
    assert await record_changed(failing, scheduler, written) == written
    written = await record_changed(recording, scheduler, written)
    assert recording.writes[-1] == {kb: 9500}
    await store.close()


async def test_the_periodic_writer_runs_until_stopped(tmp_path: Path) -> None:
    """``record_polled_every`` keeps the DB's last-poll times current while it runs and ends
    when ``stop`` is set."""
    store = await SqliteStore.open(tmp_path / "state.db")
    await _running(store, "a")
    scheduler = _Scheduler({InvocationRef(FN, "a").key: 7000})
    stop = asyncio.Event()
    task = asyncio.create_task(record_polled_every(store, scheduler, 0.01, stop))
    await wait_until(lambda: _polled(tmp_path / "state.db") == {"a": 7000}, "first write")
    scheduler.times[InvocationRef(FN, "a").key] = 8000
    await wait_until(lambda: _polled(tmp_path / "state.db") == {"a": 8000}, "second write")
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    await store.close()
