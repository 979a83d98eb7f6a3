"""Cutting FC's free text: the caps hold in bytes, no character is split, a cut says so."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.text import (
    LOG_FIELD_BYTES,
    STATE_TEXT_BYTES,
    cap_log_fields,
    marker,
    replace_surrogates,
    truncate,
    truncate_json,
    utf8_size,
)

JOURNALD_LINE_MAX = 48 * 1024


@pytest.mark.parametrize(
    ("text", "cap", "expected"),
    [
        ("", 10, ""),
        ("short", 64, "short"),
        ("x" * 64, 64, "x" * 64),
        ("x" * 100, 64, "x" * 33 + "… [truncated 100 -> 64 bytes]"),
        ("é" * 50, 64, "é" * 16 + "… [truncated 100 -> 64 bytes]"),  # the marker is 31 bytes
        ("€" * 40, 64, "€" * 11 + "… [truncated 120 -> 64 bytes]"),
        ("😀" * 30, 64, "😀" * 8 + "… [truncated 120 -> 64 bytes]"),  # 32 of 33 bytes
        ("x" * 1_048_576, 8192, "x" * 8155 + "… [truncated 1048576 -> 8192 bytes]"),
        ("abcdef", 3, "abc"),  # the marker does not fit: a bare cut
        ("aéb", 2, "a"),  # never half of é
        ("a\ud800" * 30, 64, "a\ud800" * 8 + "a… [truncated 120 -> 64 bytes]"),
    ],
    ids=[
        "empty",
        "short",
        "exactly-the-cap",
        "ascii",
        "two-byte",
        "three-byte",
        "four-byte",
        "one-megabyte",
        "cap-below-marker",
        "no-split-below-marker",
        "lone-surrogates-count-3",
    ],
)
def test_truncate_table(text: str, cap: int, expected: str) -> None:
    """Text that fits is returned as is; longer text keeps the longest prefix that fits with
    the marker, which names the original size and the cap."""
    result = truncate(text, cap)
    assert result == expected
    assert utf8_size(result) <= cap


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=0, max_value=1200))
def test_truncate_never_exceeds_the_cap_nor_splits_a_character(text: str, cap: int) -> None:
    """For any text and cap: at most ``cap`` UTF-8 bytes, and what is kept is a prefix of the
    text (whole characters), followed by the marker exactly when something was cut."""
    result = truncate(text, cap)
    assert len(result.encode("utf-8")) <= cap
    tail = marker(len(text.encode("utf-8")), cap)
    if result == text:
        assert len(text.encode("utf-8")) <= cap
        return
    kept = result.removesuffix(tail)
    assert text.startswith(kept)
    assert len(kept) < len(text)
    if result.endswith(tail):
        # Nothing more would have fitted: the next character would break the cap.
        assert utf8_size(text[: len(kept) + 1] + tail) > cap


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=0, max_value=2400))
def test_truncate_json_bounds_the_escaped_size(text: str, budget: int) -> None:
    """As JSON writes it (escapes included, quotes not), a cut text is within ``budget``, and
    what is kept is a prefix of the text."""
    result = truncate_json(text, budget)
    if len(json.dumps(text)) - 2 <= budget:
        assert result == text
        return
    assert len(json.dumps(result)) - 2 <= budget
    kept = result.removesuffix(marker(len(json.dumps(text)) - 2, budget))
    assert text.startswith(kept)
    assert len(kept) < len(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("a\ud800b", "a\ufffdb"),
        ("\udfff", "\ufffd"),
        ("\ud83d\ude00", "\ufffd\ufffd"),  # two lone halves in a str are not a pair
        ("😀", "😀"),
    ],
)
def test_replace_surrogates(text: str, expected: str) -> None:
    """Lone surrogates become U+FFFD; real characters stay."""
    assert replace_surrogates(text) == expected
    replace_surrogates(text).encode("utf-8")  # encodable everywhere text goes


@pytest.mark.parametrize(
    "filler",
    ["x", "\x01", '"', "é", "€", "😀"],
    ids=["ascii", "control", "quote", "two-byte", "three-byte", "four-byte"],
)
def test_a_log_line_stays_under_journalds_limit(filler: str) -> None:
    """A transition line with three megabyte fields of the worst-escaping characters, rendered
    by structlog's JSON renderer, is one line well under journald's 48 KiB, each field marked."""
    event: dict[str, Any] = {
        "event": "transition",
        "transition_id": "tr_" + "0" * 40,
        "invocation_id": "i" * 128,
        "event_detail": filler * 1_048_576,
        "error": filler * 1_048_576,
        "detail": filler * 1_048_576,
        "retries": 3,
    }
    capped = cap_log_fields(None, "warning", event)
    line = structlog.processors.JSONRenderer()(None, "warning", capped)
    assert isinstance(line, str)
    assert "\n" not in line
    assert len(line.encode("utf-8")) < JOURNALD_LINE_MAX - 16 * 1024
    for name in ("event_detail", "error", "detail"):
        assert capped[name].endswith(f" -> {LOG_FIELD_BYTES} bytes]")
    assert capped["invocation_id"] == "i" * 128
    assert capped["retries"] == 3


def test_short_log_fields_are_untouched() -> None:
    """The common case: nothing to cut, the same objects come back."""
    event: dict[str, Any] = {"event": "poll_failed", "error": "x" * 600, "n": 1}
    assert cap_log_fields(None, "debug", dict(event)) == event


@pytest.mark.parametrize(
    "text",
    ['Traceback (most recent call last):\n  File "x.py", line 1\n' * 400, "x" * 1_048_576],
    ids=["traceback", "ascii"],
)
def test_the_states_text_is_logged_whole(text: str) -> None:
    """Text already cut to the state's cap is not cut again in a log line (one marker, with the
    original size): the log cap leaves room for its escapes (mostly non-ASCII text is cut)."""
    state_text = truncate(text, STATE_TEXT_BYTES)
    event: dict[str, Any] = {"event": "transition", "event_detail": state_text}
    assert cap_log_fields(None, "info", event)["event_detail"] is state_text
