"""List's ``nextToken``: opaque to clients, as FC's is, and refused when it does not decode.

A token is unpadded URL-safe base64 of a small JSON object. ``Keyset`` holds the last item served
(its startedTime and id): the next page continues strictly after it in the page's order, so
items inserted or removed between pages neither repeat nor vanish. ``Offset`` holds a position
in the matching set: it repeats items when earlier ones are inserted and skips items when earlier
ones drop out, which is what the watcher's tests use it to provoke. Pure.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from watcher.core.invocation import IDENTIFIER_PATTERN

TokenMode = Literal["keyset", "offset"]


@dataclass(frozen=True, slots=True)
class Keyset:
    """Continue strictly after the item with this start time and id."""

    started_ms: int
    invocation_id: str


@dataclass(frozen=True, slots=True)
class Offset:
    """Continue at this position of the matching items."""

    position: int


Cursor = Keyset | Offset


def encode(cursor: Cursor) -> str:
    """The opaque token for ``cursor``."""
    if isinstance(cursor, Keyset):
        document: dict[str, Any] = {"v": 1, "after": [cursor.started_ms, cursor.invocation_id]}
    else:
        document = {"v": 1, "offset": cursor.position}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(token: str, mode: TokenMode) -> Cursor | None:
    """The cursor in ``token``, or ``None`` if it is not one this emulator's ``mode`` made."""
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        document = json.loads(raw)
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8 and bad JSON alike
        return None
    if not isinstance(document, dict) or document.get("v") != 1:
        return None
    if mode == "keyset":
        return _keyset(document)
    position = document.get("offset")
    if set(document) != {"v", "offset"} or not _is_int(position) or position < 0:
        return None
    return Offset(position)


def _keyset(document: dict[str, Any]) -> Keyset | None:
    after = document.get("after")
    if set(document) != {"v", "after"} or not isinstance(after, list) or len(after) != 2:
        return None
    started_ms, invocation_id = after
    if not _is_int(started_ms) or not isinstance(invocation_id, str):
        return None
    if IDENTIFIER_PATTERN.fullmatch(invocation_id) is None:
        return None
    return Keyset(started_ms, invocation_id)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
