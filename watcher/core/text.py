"""How much of FC's free text the watcher holds, shows and logs, and how it is cut: one place.

FC fills eventDetail, the error message and the payloads with whatever a function wrote, so a
megabyte is possible and any bytes are. Text is cut at a character boundary and says so with a
marker (``… [truncated 1048576 -> 8192 bytes]``: the original size, then the cap that applied),
so a reader never mistakes a cut text for the whole. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from typing import Any

STATE_TEXT_BYTES = 8192
"""Each free-text field of an invocation as the state keeps it and sinks receive it (eventDetail,
error message, payloads). A traceback fits; a dumped megabyte does not."""
MESSAGE_TEXT_BYTES = 512
"""Each free-text field in a rendered message: four of them stay under Slack's 3000-byte block
with the title and the other lines; the whole text is in the state and the webhook."""
GROUP_ERROR_BYTES = 160
"""The error after each line of a grouped message (20 lines): a hint, not the error."""
LOG_FIELD_BYTES = 10 * 1024
"""Each string field of a log event, measured as JSON writes it (escapes included: a control
character takes 6 bytes there). A transition line carries at most three free-text fields
(event_detail, error, detail): 30 KiB plus ids and statuses stays under journald's 48 KiB line
limit, past which it splits the line, with 17 KiB to spare. It is above ``STATE_TEXT_BYTES`` so
the state's text, escapes and all, is logged whole unless it is mostly non-ASCII."""

_SURROGATES = re.compile("[\ud800-\udfff]")
_SHORT_ESCAPES = frozenset('"\\\n\r\t\b\f')


def replace_surrogates(text: str) -> str:
    """``text`` with every lone surrogate (from a ``\\udXXX`` escape) replaced by U+FFFD.

    A surrogate cannot be encoded to UTF-8, and every place text ends up (SQLite, webhook bodies,
    files, a terminal) encodes it: one replacement where text enters keeps all of them safe.
    """
    return _SURROGATES.sub("\ufffd", text)


def utf8_size(text: str) -> int:
    """The UTF-8 size of ``text``; a lone surrogate counts as the 3 bytes of its replacement."""
    return len(text.encode("utf-8", "surrogatepass"))


def marker(original_bytes: int, cap: int) -> str:
    """What a cut text ends with: its original size and the cap it was cut to."""
    return f"… [truncated {original_bytes} -> {cap} bytes]"


def truncate(text: str, cap: int) -> str:
    """``text`` if it fits in ``cap`` UTF-8 bytes, else its longest prefix that fits together
    with the marker (without one if even the marker does not fit). Never splits a character."""
    if len(text) * 4 <= cap:  # fast path: no character is more than 4 bytes
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= cap:
        return text
    tail = marker(len(data), cap)
    room = cap - utf8_size(tail)
    if room < 0:
        tail, room = "", cap
    while room > 0 and data[room] & 0xC0 == 0x80:  # step back off a continuation byte
        room -= 1
    return data[:room].decode("utf-8", "surrogatepass") + tail


def _json_cost(char: str) -> int:
    """Bytes ``char`` takes in JSON with ``ensure_ascii`` (the most any renderer writes)."""
    if " " <= char <= "~":
        return 2 if char in _SHORT_ESCAPES else 1
    if char in _SHORT_ESCAPES:
        return 2
    return 12 if ord(char) > 0xFFFF else 6  # \\uXXXX, or a surrogate pair of them


def truncate_json(text: str, budget: int) -> str:
    """Like ``truncate``, but ``budget`` and the marker's sizes count the text as JSON writes it
    (quotes aside): a control character becomes 6 bytes there, so a UTF-8 cap alone would not
    bound a log line."""
    if len(text) * 12 <= budget:  # fast path: no character escapes to more than 12 bytes
        return text
    escaped = len(json.dumps(text)) - 2  # ensure_ascii: the per-character costs below
    if escaped <= budget:
        return text
    tail = marker(escaped, budget)
    room = budget - sum(_json_cost(char) for char in tail)
    cost = cut = 0
    # The text is over the budget, so this breaks, after at most ``budget`` characters (each
    # costs at least 1): never a walk through a megabyte.
    for index, char in enumerate(text):
        cost += _json_cost(char)
        if cost > budget:
            break
        if cost <= room:
            cut = index + 1
    return text[:cut] + tail if room >= 0 else text[:index]


def cap_log_fields(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every string field within ``LOG_FIELD_BYTES`` as JSON, marked if cut.

    Goes last before the renderer (after ``format_exc_info``, so a traceback is bounded too).
    """
    for key, value in list(event_dict.items()):
        if isinstance(value, str) and len(value) * 12 > LOG_FIELD_BYTES:
            event_dict[key] = truncate_json(value, LOG_FIELD_BYTES)
    return event_dict


def short_duration(ms: int) -> str:
    """A short human duration: 42s, 3m05s, 2h10m, 4d03h (never negative)."""
    seconds = max(0, ms // 1000)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"
