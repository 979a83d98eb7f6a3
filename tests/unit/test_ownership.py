"""Slots and leases decided without a database: which slot a function hashes to, what one
heartbeat releases and takes, and that replicas following those decisions share the 64 slots
fairly, never two on one slot; and the engine's ``Ownership`` that the polls ask."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.invocation import Api, FunctionRef, InvocationRef
from watcher.core.slots import SLOTS, fair_share, function_key, plan_lease, slot_of
from watcher.engine.ownership import Ownership, function_slot
from watcher.engine.poll_state import PollState
from watcher.store.records import Fence

_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)


@given(_NAMES, _NAMES, st.one_of(st.none(), _NAMES))
def test_a_function_has_one_slot_in_range(
    service: str, function: str, qualifier: str | None
) -> None:
    """The slot is in range, the same every time, and the engine's agrees with core's."""
    fn = FunctionRef(Api.FC2, function, service, qualifier)
    slot = function_slot(fn)
    assert 0 <= slot < SLOTS
    assert slot == function_slot(fn) == slot_of(function_key("fc2", service, function, qualifier))


def test_slot_hash_is_stable_across_releases() -> None:
    """Pinned values: a change of the hash would move every function to another replica and
    break the SQL that computes outbox rows' slots."""
    assert slot_of("fc2/demo-service/fn-00/LATEST") == slot_of("fc2/demo-service/fn-00/LATEST")
    assert [slot_of(f"fc3//f{n}/") for n in range(4)] == [
        int.from_bytes(__import__("hashlib").md5(f"fc3//f{n}/".encode()).digest()[:4], "big") % 64
        for n in range(4)
    ]


def test_functions_spread_over_the_slots() -> None:
    """1,000 functions fill most slots (a hash that clumps would starve replicas)."""
    slots = {slot_of(function_key("fc3", None, f"fn-{n}", None)) for n in range(1000)}
    assert len(slots) == SLOTS


@given(st.integers(min_value=1, max_value=200))
def test_fair_shares_add_up_to_every_slot_and_differ_by_one_at_most(live: int) -> None:
    shares = [fair_share(live, rank) for rank in range(live)]
    assert sum(shares) == SLOTS
    assert max(shares) - min(shares) <= 1


def test_nine_replicas_all_get_work() -> None:
    """64 / 9 rounded up for everyone (8) would leave the ninth with nothing."""
    assert sorted(fair_share(9, rank) for rank in range(9)) == [7] * 8 + [8]


@given(
    st.sets(st.integers(0, SLOTS - 1)),
    st.integers(min_value=1, max_value=70),
    st.integers(min_value=0, max_value=69),
)
def test_a_plan_releases_down_to_the_share_or_takes_up_to_it(
    held: set[int], live: int, rank: int
) -> None:
    rank = rank % live
    plan = plan_lease(held, live, rank)
    share = fair_share(live, rank)
    kept = len(held) - len(plan.release)
    assert set(plan.release) <= held
    assert not (plan.release and plan.take)
    assert kept == min(len(held), share)
    assert kept + plan.take == share
    assert all(
        slot > max(held - set(plan.release), default=-1) for slot in plan.release
    )  # highest go


def _simulate(order: list[int], replicas: int) -> dict[int, int]:
    """Replicas heartbeating in ``order`` against one slot table, as the SQL does it: renew,
    release above the share (ranked by id), take free slots in slot order. Returns slot ->
    owner."""
    owner: dict[int, int] = {}
    for who in order:
        held = {slot for slot, o in owner.items() if o == who}
        plan = plan_lease(held, replicas, who)
        for slot in plan.release:
            del owner[slot]
        free = [slot for slot in range(SLOTS) if slot not in owner][: plan.take]
        owner.update(dict.fromkeys(free, who))
    return owner


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=12), st.randoms(use_true_random=False))
def test_replicas_following_the_plans_share_every_slot_fairly(replicas: int, rng: object) -> None:
    """Whatever order the heartbeats come in, after every replica beat twice more all 64
    slots are held, one owner each, each replica exactly its fair share."""
    order = [n % replicas for n in range(replicas * 2)]
    rng.shuffle(order)  # type: ignore[attr-defined]
    owner = _simulate(order + list(range(replicas)) * 2, replicas)
    counts = [sum(1 for o in owner.values() if o == who) for who in range(replicas)]
    assert len(owner) == SLOTS
    assert counts == [fair_share(replicas, who) for who in range(replicas)]


def test_ownership_fences_only_what_it_holds() -> None:
    fn = FunctionRef(Api.FC3, "transcode")
    slot = function_slot(fn)
    ownership = Ownership("a")
    assert ownership.fence(fn) is None
    gained, lost = ownership.update({slot: 7, (slot + 1) % SLOTS: 1})
    assert gained == {slot, (slot + 1) % SLOTS} and lost == set()
    assert ownership.fence(fn) == Fence(slot, 7, "a")
    # Held again under a new epoch: gained again (someone else may have worked it meanwhile).
    gained, lost = ownership.update({slot: 8})
    assert gained == {slot} and lost == {(slot + 1) % SLOTS}
    assert not ownership.drop(Fence(slot, 7, "a"))  # an old epoch's refusal drops nothing
    assert ownership.fence(fn) == Fence(slot, 8, "a")
    assert ownership.drop(Fence(slot, 8, "a"))
    assert ownership.fence(fn) is None and ownership.slots() == frozenset()


def test_clear_drops_everything() -> None:
    ownership = Ownership("a")
    ownership.update({1: 1, 2: 1})
    assert ownership.clear() == {1, 2}
    assert ownership.held() == {}


def test_only_the_held_slots_invocations_count_as_active() -> None:
    """Readiness waits for polls of this replica's own invocations only."""
    mine, theirs = FunctionRef(Api.FC3, "mine"), FunctionRef(Api.FC3, "theirs")
    if function_slot(mine) == function_slot(theirs):  # pragma: no cover (fixed names)
        theirs = FunctionRef(Api.FC3, "theirs-too")
    ownership = Ownership("a")
    ownership.update({function_slot(mine): 1})
    states = [
        PollState(InvocationRef(fn, f"job-{n}"), {}, None, 1.0, done=(n == 2))
        for fn in (mine, theirs)
        for n in range(3)
    ]
    assert ownership.count_active(states) == 2
    assert ownership.take_fence(states[0]) and states[0].fence == Fence(function_slot(mine), 1, "a")
    assert not ownership.take_fence(states[3]) and states[3].fence is None
