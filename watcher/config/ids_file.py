"""``invocations_file`` lists: parsing, expanding a config's ids, and re-reading them live.

One parser and one expansion serve both readers. The load at start is strict: any bad line
fails the config, so a typo never starts a daemon that silently tracks less. A live re-read
(``reread_tracked``, on a file change) is lenient: the good lines apply, each bad line is one
``FileProblem`` naming file and line, and a file that cannot be read keeps its entry's previous
ids, since an editor's atomic save leaves the name missing for a moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from watcher.config.models import Config, LoadedConfig, Tracked, WatchEntry
from watcher.core.invocation import InvalidIdentifierError, InvocationRef, validate_identifier


def ids_file_path(entry: WatchEntry, base_dir: Path) -> Path | None:
    """Where ``entry``'s ids file is: a relative path is next to the config file."""
    path = entry.invocations_file
    if path is None or path.is_absolute():
        return path
    return base_dir / path


def watched_files(loaded: LoadedConfig) -> tuple[Path, ...]:
    """Every ids file ``loaded`` names, once each, in config order."""
    paths = (ids_file_path(entry, loaded.path.parent) for entry in loaded.config.watch)
    return tuple(dict.fromkeys(path for path in paths if path is not None))


def parse_ids(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line number, id) of each good line and (line number, error) of each bad one.

    ``#`` starts a comment; blank and comment-only lines are neither. Lines count from 1.
    """
    good: list[tuple[int, str]] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            good.append((number, validate_identifier("invocation id", line)))
        except InvalidIdentifierError as exc:
            bad.append((number, str(exc)))
    return good, bad


@dataclass(frozen=True, slots=True)
class Candidate:
    """An id some part of the config lists, before it becomes a ``Tracked``."""

    value: str
    origin: str
    """The YAML path listing it: a duplicate names it, and one origin may repeat an id."""
    where: str
    """Where a problem with this id is reported."""
    file: Path | None = None
    line: int | None = None


def _tracked(config: Config, entry: WatchEntry, ref: InvocationRef) -> Tracked:
    return Tracked(
        ref=ref,
        labels=dict(entry.labels),
        stuck_after_s=entry.stuck_after_s or config.poll.stuck_after_s,
        stuck_repeat_s=entry.stuck_repeat_s or config.poll.stuck_repeat_s,
    )


def expand(
    config: Config,
    candidates_for: Callable[[int, WatchEntry], Iterable[Candidate]],
    report: Callable[[Candidate, str], None],
) -> tuple[Tracked, ...]:
    """The tracked set: every entry's candidates, each invocation once (the first origin)."""
    tracked: dict[str, Tracked] = {}
    origin: dict[str, str] = {}
    for index, entry in enumerate(config.watch):
        where = f"watch[{index}]"
        try:
            function_ref = entry.function_ref()
        except InvalidIdentifierError as exc:
            report(Candidate("", where, where), str(exc))
            continue
        for candidate in candidates_for(index, entry):
            try:
                ref = InvocationRef(function_ref, candidate.value)
            except InvalidIdentifierError as exc:
                report(candidate, str(exc))
                continue
            first = origin.get(ref.key)
            if first is not None:
                if first != candidate.origin:
                    report(candidate, f"{candidate.value!r} is already tracked by {first}")
                continue
            tracked[ref.key] = _tracked(config, entry, ref)
            origin[ref.key] = candidate.origin
    return tuple(tracked.values())


def inline_candidates(index: int, entry: WatchEntry) -> list[Candidate]:
    """The ids the entry lists in the YAML itself."""
    return [
        Candidate(value, f"watch[{index}].invocations[{i}]", f"watch[{index}].invocations[{i}]")
        for i, value in enumerate(entry.invocations)
    ]


# -- the live re-read --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A line of an ids file that was skipped, or a file that could not be read."""

    file: Path
    line: int | None
    """None: the whole file (unreadable; its entry kept its previous ids)."""
    error: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.error}"


def _kept_ids(config: Config, entry: WatchEntry, previous: Sequence[Tracked]) -> list[str]:
    """The ids ``entry``'s file gave before: those of ``previous`` that the entry would make
    (same function, labels and stuck settings) and does not list inline."""
    function_ref = entry.function_ref()
    inline = set(entry.invocations)
    return [
        item.ref.invocation_id
        for item in previous
        if item.ref.function_ref == function_ref
        and item.ref.invocation_id not in inline
        and item == _tracked(config, entry, item.ref)
    ]


def _file_candidates(
    index: int, path: Path, kept: Callable[[], list[str]], problems: list[FileProblem]
) -> list[Candidate]:
    origin = f"watch[{index}].invocations_file"
    try:
        data = path.read_bytes()
    except OSError as exc:
        ids = kept()
        reason = exc.strerror or type(exc).__name__
        problems.append(FileProblem(path, None, f"cannot read ({reason}); kept {len(ids)} ids"))
        return [Candidate(value, origin, str(path), path) for value in ids]
    # Undecodable bytes become U+FFFD, which no id may hold: that line alone is bad.
    good, bad = parse_ids(data.decode("utf-8-sig", errors="replace"))
    problems.extend(FileProblem(path, number, error) for number, error in bad)
    return [Candidate(value, origin, f"{path}:{n}", path, n) for n, value in good]


def reread_tracked(
    loaded: LoadedConfig, previous: Sequence[Tracked] | None = None
) -> tuple[tuple[Tracked, ...], list[FileProblem]]:
    """The config's tracked set with every ids file read again now, and what was skipped.

    The good lines apply; each bad line is one problem (``str()`` is ``path:line: error``);
    an unreadable file keeps the ids its entry had in ``previous`` (by default what the config
    loaded with) and is one problem. Only the files are read: the YAML is not.
    """
    config = loaded.config
    before = loaded.tracked if previous is None else previous
    problems: list[FileProblem] = []

    def candidates_for(index: int, entry: WatchEntry) -> list[Candidate]:
        found = inline_candidates(index, entry)
        path = ids_file_path(entry, loaded.path.parent)
        if path is not None:
            kept = partial(_kept_ids, config, entry, before)  # worked out only if unreadable
            found += _file_candidates(index, path, kept, problems)
        return found

    def report(candidate: Candidate, error: str) -> None:
        problems.append(FileProblem(candidate.file or loaded.path, candidate.line, error))

    return expand(config, candidates_for, report), problems
