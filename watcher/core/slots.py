"""Hash slots and leases, decided without I/O: which slot a function is in, and what one
replica's heartbeat should release and take.

The unit of work shared between replicas is a function (api/service/function/qualifier): its
scans, Gets, watermark and commits all stay on one replica. Functions hash into ``SLOTS`` slots
by the first 32 bits of an MD5 of the function's key: MD5 rather than CRC-32 because
PostgreSQL computes it too (``md5()``), so a migration can give rows written before slots
existed the very slot Python would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

SLOTS = 64


def function_key(api: str, service: str | None, function: str, qualifier: str | None) -> str:
    """The text the slot is hashed from: the invocation key without its id."""
    return "/".join((api, service or "", function, qualifier or ""))


def slot_of(key: str) -> int:
    """The slot of a function key (``function_key``), in ``range(SLOTS)``."""
    digest = hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % SLOTS


SLOT_SQL = (
    "(('x' || lpad(substr(md5({key}), 1, 8), 16, '0'))::bit(64)::bigint % " + str(SLOTS) + ")"
)
"""``slot_of`` in SQL, around an expression giving the function key (UTF-8 text)."""


def fair_share(live: int, rank: int = 0) -> int:
    """The slots the replica ranked ``rank`` (by id) of ``live`` ones should hold: 64 split as
    evenly as whole slots go, the first ``64 % live`` replicas holding one more. The shares add
    up to exactly 64, so no replica is left idle while another holds more than its part (with
    64 / live rounded up for everyone, 9 replicas would leave one with nothing)."""
    live = max(1, live)
    return SLOTS // live + (1 if rank < SLOTS % live else 0)


@dataclass(frozen=True, slots=True)
class LeasePlan:
    """What one heartbeat does after renewing: slots to hand back, how many more to take."""

    release: tuple[int, ...]
    take: int


def plan_lease(held: Collection[int], live: int, rank: int = 0) -> LeasePlan:
    """Above the fair share: release the highest slots (the rest keep their work); below it:
    take up to the share of what is free or expired."""
    share = fair_share(live, rank)
    ordered = sorted(held)
    if len(ordered) > share:
        return LeasePlan(tuple(ordered[share:]), 0)
    return LeasePlan((), share - len(ordered))
