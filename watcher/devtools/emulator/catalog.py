"""Every invocation the emulator serves, by key and by function, with their cached bodies.

Built once from a scenario (explicit invocations, then the generators' expansion), grown by
run-time submissions, marked by stops. Bodies are rendered with ``timeline.state_at`` and cached
as bytes per invocation until its phase changes: the benchmark polls thousands of unchanged
invocations, and the emulator must not be what it measures.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager

from watcher.core.invocation import Api
from watcher.devtools.emulator.generators import expand
from watcher.devtools.emulator.index import Entry, FunctionIndex, InvocationKey, key_of
from watcher.devtools.emulator.scenario import Scenario
from watcher.devtools.emulator.timeline import (
    InvocationLike,
    epoch_at,
    phase_at,
    started_s,
    state_at,
)

FunctionKey = tuple[Api, str, str]  # api, service ("" for FC 3.0), function


FROZEN_FROM = 10_000
"""From this many invocations, the built catalog is exempted from the cyclic collector."""


@contextmanager
def _collector_paused() -> Iterator[None]:
    # Building 100,000 entries allocates millions of objects, which sets off the cyclic
    # collector again and again over the growing heap: two thirds of the build time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Catalog:
    """The invocations of one emulator run."""

    def __init__(self, scenario: Scenario, *, epoch_ms: int) -> None:
        self._scenario = scenario
        self._epoch_ms = epoch_ms
        self._entries: dict[InvocationKey, Entry] = {}
        self._functions: dict[FunctionKey, FunctionIndex] = {}
        with _collector_paused():
            for spec in scenario.invocations:
                self._entries[key_of(spec)] = self._entry(spec)  # a repeated id: the last wins
            for index, generator in enumerate(scenario.generators):
                for generated in expand(generator, seed=scenario.seed, index=index):
                    self._entries[key_of(generated)] = self._entry(generated)
            grouped: dict[FunctionKey, list[Entry]] = {}
            for key, entry in self._entries.items():
                grouped.setdefault(key[:3], []).append(entry)
            for function, entries in grouped.items():
                self._functions[function] = FunctionIndex(entries)
        if len(self._entries) >= FROZEN_FROM:
            # It lives as long as the run, and every full collection would scan it again: a
            # third of a second, inside the benchmark's requests.
            gc.freeze()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, spec: InvocationLike) -> Entry:
        started_ms = epoch_at(self._epoch_ms, started_s(spec))
        return Entry(spec=spec, key=key_of(spec), sort_key=(started_ms, spec.id))

    def entry(self, key: InvocationKey) -> Entry | None:
        """The invocation under ``key``, visible yet or not."""
        return self._entries.get(key)

    def function(self, key: FunctionKey) -> FunctionIndex | None:
        """The List index of one function, if it has any invocation."""
        return self._functions.get(key)

    def submit(self, spec: InvocationLike, now_s: float) -> Entry | None:
        """Add an invocation at run time; ``None`` if its key is taken."""
        key = key_of(spec)
        if key in self._entries:
            return None
        entry = self._entries[key] = self._entry(spec)
        function = self._functions.get(key[:3])
        if function is None:
            self._functions[key[:3]] = FunctionIndex([entry])
        else:
            function.add(entry, now_s)
        return entry

    def stop(self, entry: Entry, now_s: float) -> None:
        """Stop ``entry`` at ``now_s``."""
        self._functions[entry.key[:3]].stop(entry, now_s)

    def body(self, entry: Entry, now_s: float) -> dict[str, object] | None:
        """The Get body of ``entry`` at ``now_s`` (a fresh dict), ``None`` while not found."""
        scenario = self._scenario
        return state_at(
            entry.spec,
            now_s,
            epoch_ms=self._epoch_ms,
            account_id=scenario.account_id,
            region=scenario.region,
            stopped_at_s=entry.stopped_at_s,
        )

    def body_bytes(self, entry: Entry, now_s: float) -> bytes | None:
        """The Get body as JSON, re-rendered only when ``entry``'s timeline has moved."""
        phase = phase_at(entry.spec, now_s, entry.stopped_at_s)
        cached = entry.get_cache
        if cached is not None and cached[0] == phase:
            return cached[1]
        body = self.body(entry, now_s)
        encoded = None if body is None else json.dumps(body).encode()
        entry.get_cache = (phase, encoded)
        return encoded

    def list_item(self, entry: Entry, now_s: float, *, include_payload: bool) -> bytes:
        """``entry`` as a List item: the Get body without the payload unless asked for, and
        without events unless the scenario says ``list_events``. It must be visible."""
        phase = (phase_at(entry.spec, now_s, entry.stopped_at_s), include_payload)
        cached = entry.list_cache
        if cached is not None and cached[0] == phase:
            return cached[1]
        body = self.body(entry, now_s)
        assert body is not None, "the index lists only visible invocations"
        if not self._scenario.list_events:
            del body["events"]
        if not include_payload:
            body.pop("invocationPayload", None)
            body.pop("taskPayload", None)
        encoded = json.dumps(body).encode()
        entry.list_cache = (phase, encoded)
        return encoded
