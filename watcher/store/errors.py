"""The one error type of the state store: which file, why, and what to do."""

from __future__ import annotations


class StateStoreError(Exception):
    """The state DB cannot be used; the message says which file, why, and what to do."""
