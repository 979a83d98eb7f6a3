"""Re-reading ``invocations_file`` lists live: good lines apply, each bad line is one problem
at file:line, an unreadable file keeps its ids; the strict load at start is unchanged."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.config.ids_file import parse_ids, reread_tracked, watched_files
from watcher.config.load import ConfigError, load_config
from watcher.config.models import LoadedConfig, Tracked
from watcher.daemon.filewatch import InvocationsFileWatcher

GOOD = st.text("abcXYZ019_-", min_size=1, max_size=20)
BAD = st.one_of(
    st.text("abc !/.%", min_size=1, max_size=10).filter(lambda s: s.strip() and " " in s.strip()),
    st.just("a/b"),
    st.just("x" * 129),
    st.just("%2e%2e"),
)
LINE = st.one_of(
    st.tuples(st.just("good"), GOOD),
    st.tuples(st.just("bad"), BAD),
    st.tuples(st.just("blank"), st.sampled_from(["", "   ", "# a comment", "  # x"])),
)


def _config(tmp_path: Path, watch: list[dict[str, object]]) -> Path:
    document = {
        "fc": {"account_id": "1234567890123456", "region": "cn-hangzhou"},
        "state": {"path": str(tmp_path / "state.db")},
        "watch": watch,
    }
    path = tmp_path / "watcher.yaml"
    path.write_text(json.dumps(document))
    return path


def _load(tmp_path: Path, ids: str, inline: list[str] | None = None) -> LoadedConfig:
    (tmp_path / "ids.txt").write_text(ids)
    entry = {"service": "s", "function": "f", "invocations": inline or ["inline-1"]}
    return load_config(_config(tmp_path, [{**entry, "invocations_file": "ids.txt"}]))


def _ids(tracked: Sequence[Tracked]) -> list[str]:
    return [item.ref.invocation_id for item in tracked]


@given(st.lists(LINE, max_size=30))
def test_parse_keeps_every_good_line_and_numbers_every_bad_one(
    lines: list[tuple[str, str]],
) -> None:
    """Any mix: exactly the good ids, in order, and one problem per bad line, at its line."""
    text = "\n".join(value + (" # why" if kind == "good" else "") for kind, value in lines)
    good, bad = parse_ids(text)
    assert good == [(n, v) for n, (kind, v) in enumerate(lines, 1) if kind == "good"]
    assert [n for n, _ in bad] == [n for n, (kind, _) in enumerate(lines, 1) if kind == "bad"]
    assert all("invalid invocation id" in error for _, error in bad)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(st.lists(LINE, max_size=20))
def test_reread_applies_the_good_lines_and_reports_each_bad_one_at_file_and_line(
    tmp_path: Path, lines: list[tuple[str, str]]
) -> None:
    """The file rewritten with any mix: the inline id plus each distinct good id, and one
    ``path:line: ...`` problem per bad line."""
    loaded = _load(tmp_path, "start-1\n")
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{value}\n" for _, value in lines))
    tracked, problems = reread_tracked(loaded)
    good = [v for kind, v in lines if kind == "good" and v != "inline-1"]
    assert _ids(tracked) == ["inline-1", *dict.fromkeys(good)]
    expected = [f"{path}:{n}: " for n, (kind, v) in enumerate(lines, 1) if kind == "bad"]
    expected += [  # the inline id repeated in the file is reported too, after the bad lines
        f"{path}:{n}: 'inline-1' is already tracked by watch[0].invocations[0]"
        for n, (kind, v) in enumerate(lines, 1)
        if kind == "good" and v == "inline-1"
    ]
    assert len(problems) == len(expected)
    for problem, prefix in zip(problems, expected, strict=True):
        assert str(problem).startswith(prefix)


def test_reread_sees_an_appended_id_and_a_removed_one(tmp_path: Path) -> None:
    """The file is read now, not at load: an id added or removed since shows."""
    loaded = _load(tmp_path, "a\nb\n")
    assert _ids(loaded.tracked) == ["inline-1", "a", "b"]
    (tmp_path / "ids.txt").write_text("\ufeffb\nc  # new\n")  # a BOM is no part of an id
    tracked, problems = reread_tracked(loaded)
    assert (_ids(tracked), problems) == (["inline-1", "b", "c"], [])
    assert tracked[1].labels == loaded.tracked[0].labels


def test_a_bad_line_is_reported_while_the_good_ones_apply(tmp_path: Path) -> None:
    """Unlike the load, a bad line does not fail the re-read; it names file and line."""
    loaded = _load(tmp_path, "a\n")
    path = tmp_path / "ids.txt"
    path.write_text("a\n# note\nbad id\nb\n")
    tracked, problems = reread_tracked(loaded)
    assert _ids(tracked) == ["inline-1", "a", "b"]
    assert [str(p) for p in problems] == [
        f"{path}:3: invalid invocation id 'bad id': use 1 to 128 letters, digits, '_' or '-'"
    ]
    assert (problems[0].file, problems[0].line) == (path, 3)


def test_bytes_that_are_not_utf8_spoil_only_their_line(tmp_path: Path) -> None:
    """A line of invalid UTF-8 is one bad line; the rest of the file applies."""
    loaded = _load(tmp_path, "a\n")
    (tmp_path / "ids.txt").write_bytes(b"a\nb\xff\xfe\nc\n")
    tracked, problems = reread_tracked(loaded)
    assert _ids(tracked) == ["inline-1", "a", "c"]
    assert [p.line for p in problems] == [2]


def test_an_unreadable_file_keeps_its_entrys_previous_ids(tmp_path: Path) -> None:
    """Missing mid-save: the ids it gave before stay tracked, and it is one problem."""
    loaded = _load(tmp_path, "a\nb\n")
    path = tmp_path / "ids.txt"
    path.write_text("c\n")
    previous, _ = reread_tracked(loaded)
    path.unlink()
    tracked, problems = reread_tracked(loaded, previous)
    assert _ids(tracked) == ["inline-1", "c"]
    assert len(problems) == 1
    assert problems[0].line is None
    assert str(problems[0]).startswith(f"{path}: cannot read (No such file or directory)")
    # With no history given, what the config loaded with is kept.
    tracked, _ = reread_tracked(loaded)
    assert _ids(tracked) == ["inline-1", "a", "b"]


def test_one_unreadable_file_does_not_hold_back_another(tmp_path: Path) -> None:
    """Two entries of one function with different labels: one file vanishes and keeps its
    ids (only its own), the other's edit applies."""
    (tmp_path / "one.txt").write_text("a\n")
    (tmp_path / "two.txt").write_text("b\n")
    entry = {"service": "s", "function": "f"}
    loaded = load_config(
        _config(
            tmp_path,
            [
                {**entry, "labels": {"team": "one"}, "invocations_file": "one.txt"},
                {**entry, "labels": {"team": "two"}, "invocations_file": "two.txt"},
            ],
        )
    )
    assert watched_files(loaded) == (tmp_path / "one.txt", tmp_path / "two.txt")
    (tmp_path / "one.txt").unlink()
    (tmp_path / "two.txt").write_text("c\n")
    tracked, problems = reread_tracked(loaded)
    assert [(t.ref.invocation_id, t.labels["team"]) for t in tracked] == [
        ("a", "one"),
        ("c", "two"),
    ]
    assert [p.file.name for p in problems] == ["one.txt"]


def test_the_load_at_start_stays_strict(tmp_path: Path) -> None:
    """A bad line still fails the config at load, naming the entry, file and line."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "ok-1\nbad id\n")
    assert caught.value.problems == [
        f"watch[0].invocations_file: {tmp_path / 'ids.txt'}:2: invalid invocation id "
        "'bad id': use 1 to 128 letters, digits, '_' or '-'"
    ]


async def test_the_watcher_applies_a_changed_set_once_and_retries_after_a_failure(
    tmp_path: Path,
) -> None:
    """``apply`` hands over only a changed set (a plain callback works too); a callback that
    raises leaves the old set in place, so the next re-read offers the change again."""
    loaded = _load(tmp_path, "a\n")
    received: list[list[str]] = []
    failing = [True]

    def on_change(tracked: tuple[Tracked, ...]) -> None:
        if failing[0]:
            raise RuntimeError("the state DB is locked")
        received.append(_ids(tracked))

    watcher = InvocationsFileWatcher(loaded, on_change)
    assert not await watcher.apply()  # nothing changed since the load
    (tmp_path / "ids.txt").write_text("b\n")
    assert not await watcher.apply()
    assert _ids(watcher.tracked) == ["inline-1", "a"]
    failing[0] = False
    assert await watcher.apply()
    assert not await watcher.apply()
    assert received == [["inline-1", "b"]]
