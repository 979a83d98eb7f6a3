"""The one error type of the state store: which file, why, what to do, and what kind of failure.

The kind is what readiness, the STATUS line, the failed-writes metric and the log rate limit
key on: a handful of stable words (``disk_full``, ``read_only``...), never the message itself,
which names the file and so would make series and throttle windows unbounded.
"""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    """Why the state DB could not be used, in a word."""

    DISK_FULL = "disk_full"
    READ_ONLY = "read_only"
    CORRUPT = "corrupt"
    LOCKED = "locked"
    IO_ERROR = "io_error"
    CONNECTION_LOST = "connection_lost"
    OTHER = "other"

    @property
    def phrase(self) -> str:
        """A few words for a STATUS line: "disk full", "read-only"..."""
        return _PHRASES[self]


_PHRASES = {
    FailureKind.DISK_FULL: "disk full",
    FailureKind.READ_ONLY: "read-only",
    FailureKind.CORRUPT: "corrupt",
    FailureKind.LOCKED: "locked by another process",
    FailureKind.IO_ERROR: "I/O error",
    FailureKind.CONNECTION_LOST: "PostgreSQL unreachable",
    FailureKind.OTHER: "error",
}


class StateStoreError(Exception):
    """The state DB cannot be used; the message says which file, why, and what to do."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.OTHER) -> None:
        super().__init__(message)
        self.kind = kind


class FencedError(StateStoreError):
    """A fenced write refused: this replica no longer holds the slot (or that epoch of it)."""
