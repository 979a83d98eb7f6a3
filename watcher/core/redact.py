"""Masking secrets in text that may reach a log line or an error. Pure."""

from __future__ import annotations


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret masked."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
