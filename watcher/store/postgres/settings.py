"""Where the PostgreSQL state is, from the config's ``state`` section: ``state.url`` (a secret:
it may hold the password) and, optionally, ``state.password`` (for a URL without one). The
config loader reads ``url_file`` and ``password_file`` into them, as it does every ``*_file``;
with no password at all, asyncpg reads ``PGPASSFILE`` or ``~/.pgpass``.
"""

from __future__ import annotations


def _secret(value: object) -> str:
    if value is None:
        return ""
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if callable(reveal) else value).strip()


def postgres_target(state: object) -> tuple[str, str | None] | None:
    """``(url, password)`` of ``state``, or None when it names no PostgreSQL URL (the state is
    then SQLite's ``state.path``). ``password`` is None unless given apart from the URL."""
    # getattr: SecretStr or plain text, and a section without these fields means SQLite.
    url = _secret(getattr(state, "url", None))
    if not url:
        return None
    return url, _secret(getattr(state, "password", None)) or None
