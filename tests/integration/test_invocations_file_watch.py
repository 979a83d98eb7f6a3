"""An ``invocations_file`` edited while the watcher runs: the scheduler follows, no SIGHUP.

The watcher parts are built as the daemon builds them, against a real emulator, and the file
watcher is wired to the config source the way the service wires it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.conftest import EmulatorFactory, emulator_fc
from tests.integration.daemon import wait_until
from watcher.config.load import load_config
from watcher.config.models import LoadedConfig, Tracked
from watcher.core.clock import SystemClock
from watcher.daemon.build import Parts, build
from watcher.daemon.filewatch import InvocationsFileWatcher
from watcher.store.sqlite import SqliteStore

RUNNING = [{"at_s": 0, "status": "Running"}]


@dataclass
class Running:
    """The parts, the file watcher's task, and what the watcher logged."""

    parts: Parts
    watcher: InvocationsFileWatcher
    ids: Path
    stop: asyncio.Event
    task: asyncio.Task[None]
    logs: list[MutableMapping[str, Any]]

    def tracked(self) -> set[str]:
        return {key.rsplit("/", 1)[1] for key in self.parts.scheduler.snapshots()}

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        return [entry for entry in self.logs if entry["event"] == name]


def _write_config(tmp_path: Path, url: str, ids_file: str = "ids/ids.txt") -> LoadedConfig:
    config = {
        "fc": emulator_fc(url),
        "state": {"path": str(tmp_path / "state.db")},
        "watch": [
            {
                "service": "demo-service",
                "function": "demo-function",
                "qualifier": "LATEST",
                "invocations": ["a"],
                "invocations_file": ids_file,
            }
        ],
    }
    (tmp_path / "ids").mkdir(exist_ok=True)
    (tmp_path / ids_file).write_text("b\n")
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return load_config(path)


@pytest.fixture
async def running(
    start_emulator: EmulatorFactory, http_session: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[Running]:
    emu = await start_emulator(invocations=[{"id": i, "timeline": RUNNING} for i in "abcdefg"])
    loaded = _write_config(tmp_path, emu.url)
    store = await SqliteStore.open(loaded.config.state.sqlite_path())
    parts = await build(
        loaded.config,
        loaded.tracked,
        store=store,
        session=http_session,
        clock=SystemClock(),
        rng=random.Random(1),
        metrics=None,
    )

    async def on_change(tracked: tuple[Tracked, ...]) -> None:  # as the service wires it
        parts.config_source.replace(tracked, parts.scheduler, await parts.store.load_snapshots())

    watcher = InvocationsFileWatcher(loaded, on_change, settle_ms=50)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.wait_for(watcher.watching.wait(), timeout=30)  # the watch is up
        try:
            yield Running(parts, watcher, tmp_path / "ids" / "ids.txt", stop, task, logs)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
            await store.close()


async def _settled(run: Running, expected: set[str], what: str) -> None:
    await wait_until(lambda: run.tracked() == expected, what)


async def test_an_appended_id_is_tracked_and_polled(running: Running) -> None:
    """Appending to the file adds the id, and the next polls reach the emulator for it."""
    assert running.tracked() == {"a", "b"}
    with running.ids.open("a") as handle:
        handle.write("c\n")
    await _settled(running, {"a", "b", "c"}, "c to be tracked")
    assert running.events("invocations_file_changed")[-1]["added"] == 1
    await running.parts.scheduler.poll_all()
    snapshots = running.parts.scheduler.snapshots()
    assert {key.rsplit("/", 1)[1] for key, snap in snapshots.items() if snap} == {"a", "b", "c"}


async def test_a_bad_line_is_reported_at_file_and_line_while_the_good_ones_apply(
    running: Running,
) -> None:
    """One bad line among good ones: it is logged with file and line, the rest is tracked."""
    running.ids.write_text("b\n# added today\nbad id\nd\n")
    await _settled(running, {"a", "b", "d"}, "d to be tracked despite the bad line")
    bad = running.events("invocations_file_bad_line")
    assert [(entry["file"], entry["line"]) for entry in bad] == [(str(running.ids), 3)]
    assert "'bad id'" in bad[0]["error"]


async def test_an_atomic_replace_and_a_vanished_file(running: Running) -> None:
    """A rename over the file (an editor's save) swaps the ids; a file gone mid-save keeps
    them and is reported once; it coming back applies again."""
    replacement = running.ids.with_name("ids.txt.tmp")
    replacement.write_text("e\nf\n")
    os.replace(replacement, running.ids)
    await _settled(running, {"a", "e", "f"}, "the replaced file's ids")
    assert running.events("invocations_file_changed")[-1]["removed"] == 1

    running.ids.unlink()
    await wait_until(
        lambda: bool(running.events("invocations_file_unreadable")), "the missing file"
    )
    assert running.tracked() == {"a", "e", "f"}
    assert running.events("invocations_file_unreadable")[0]["file"] == str(running.ids)

    running.ids.write_text("g\n")
    await _settled(running, {"a", "g"}, "the recreated file's ids")


async def test_stop_ends_the_watch(running: Running) -> None:
    """Setting stop ends ``run`` (bounded only against a hang), and no edit applies after."""
    running.stop.set()
    await asyncio.wait_for(running.task, timeout=30)
    running.ids.write_text("c\n")
    await asyncio.sleep(0.3)
    assert running.tracked() == {"a", "b"}


async def test_after_a_reload_the_new_configs_file_is_followed(
    running: Running, tmp_path: Path
) -> None:
    """A reload naming another file: the watcher follows that one, and the old file's edits
    no longer apply."""
    url = running.parts.config.fc.endpoint
    assert url is not None
    reloaded = _write_config(tmp_path, url, "other.txt")  # lists a, and b from other.txt
    snapshots = await running.parts.store.load_snapshots()
    running.parts.config_source.replace(reloaded.tracked, running.parts.scheduler, snapshots)
    running.watcher.use_config(reloaded)  # what the service's reload adds
    (tmp_path / "other.txt").write_text("b\nc\n")
    await _settled(running, {"a", "b", "c"}, "the new file's ids")
    running.ids.write_text("d\n")
    (tmp_path / "other.txt").write_text("e\n")
    await _settled(running, {"a", "e"}, "the new file's next edit")
    assert "d" not in running.tracked()
