"""The tracked set's cap: finished invocations are forgotten first, active ones never."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.model import Snapshot
from watcher.engine.membership import TrackedSet
from watcher.engine.poll import PollState

FN = FunctionRef(Api.FC2, "f", "s")


def _state(n: int, *, done: bool, changed_ms: int = 0) -> PollState:
    snapshot = Snapshot(status="Succeeded" if done else "Running", changed_ms=changed_ms)
    state = PollState(InvocationRef(FN, f"id-{n}"), {}, snapshot, 10.0)
    state.done = done
    return state


@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(1, 100))
def test_the_cap_never_forgets_an_active_invocation(finished: list[bool], cap: int) -> None:
    tracked = TrackedSet(cap)
    added = []
    for n, done in enumerate(finished):
        if tracked.add("discover:x", _state(n, done=done, changed_ms=n)):
            added.append((n, done))
    assert len(tracked) <= cap
    active_added = {n for n, done in added if not done}
    assert active_added <= {int(k.rsplit("-", 1)[1]) for k in tracked.states}
    assert tracked.refused + len(added) == len(finished)
    assert tracked.evicted == len(added) - len(tracked)  # only what was made room for left


def test_the_longest_unchanged_finished_ones_go_first() -> None:
    tracked = TrackedSet(3)
    for n, changed_ms in enumerate((300, 100, 200)):
        assert tracked.add("config", _state(n, done=True, changed_ms=changed_ms))
    assert tracked.add("config", _state(9, done=False))
    assert "id-1" not in {k.rsplit("/", 1)[1] for k in tracked.states}  # changed longest ago
    assert tracked.found_by_counts() == {"listed": 3}


def test_at_the_cap_with_all_active_a_new_one_is_turned_away() -> None:
    tracked = TrackedSet(2)
    assert tracked.add("live", _state(0, done=False))
    assert tracked.add("live", _state(1, done=False))
    assert not tracked.add("live", _state(2, done=False))
    assert tracked.refused == 1
    assert len(tracked) == 2


def test_an_invocation_stays_while_any_source_wants_it() -> None:
    tracked = TrackedSet(10)
    state = _state(0, done=False)
    assert tracked.add("config", state)
    assert tracked.claim("live", state.ref.key)
    assert tracked.found_by_of(state.ref.key) == "listed"
    assert not tracked.release("config", state.ref.key)
    assert tracked.found_by_of(state.ref.key) == "live"
    assert tracked.release("live", state.ref.key)
    assert list(tracked.of_function(FN)) == []
