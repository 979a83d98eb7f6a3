"""Which invocations a running watcher tracks, as ``status`` can tell from the config and the
state DB: those the config lists, those registered live, and those its discover entries find
(every invocation of a discovered function whose id has the entry's prefix)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from watcher.config.models import Config
from watcher.core.invocation import InvocationRef


@dataclass(frozen=True, slots=True)
class TrackedKeys(Collection[str]):
    """A set of keys, plus key prefixes that stand for every key that starts with them."""

    keys: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return key in self.keys or key.startswith(self.prefixes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def with_keys(self, more: Collection[str]) -> TrackedKeys:
        return TrackedKeys(self.keys | frozenset(more), self.prefixes)


def discovered_prefixes(config: Config) -> tuple[str, ...]:
    """The key prefix of each discover entry: its function's keys, with its id prefix."""
    prefixes = []
    for entry in config.watch:
        if entry.discover is not None:
            function_key = InvocationRef(entry.function_ref(), "x").key[:-1]
            prefixes.append(function_key + (entry.discover.prefix or ""))
    return tuple(prefixes)


def with_live(tracked: Collection[str], live: Collection[str]) -> Collection[str]:
    """``tracked`` plus the ids registered live."""
    if isinstance(tracked, TrackedKeys):
        return tracked.with_keys(live)
    return {*tracked, *live}
