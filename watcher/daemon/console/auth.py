"""Who may act on the console, and proof that a form was sent by the console itself.

Reading needs nothing (bind ``http.listen`` to loopback, or put a proxy in front). Acting
(adding or expiring a silence, redelivering a dead letter) needs the daemon's bearer token:
an ``Authorization: Bearer`` header (scripts; a browser never adds one across sites, so no
CSRF check is needed), or a session cookie the sign-in form sets once the token was given.

A session cookie is ``<expiry ms>.<HMAC>`` under a secret drawn at start, bound to a digest
of the current token: a restart or a rotated token signs everyone out, and nothing in the
cookie reveals the token. It is HttpOnly and SameSite=Strict. A form sent with it must also
carry the CSRF token, an HMAC of the cookie under the same secret (only a page the console
rendered for that session has it), and must come from the console's own origin (``Origin``
and ``Sec-Fetch-Site``, where the browser sends them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

SESSION_COOKIE = "fcw_console"
SESSION_MS = 12 * 3600 * 1000
"""How long a sign-in lasts."""


class Guard:
    """Checks tokens, sessions and CSRF tokens; holds the current bearer token."""

    def __init__(self, token: str | None) -> None:
        self._secret = secrets.token_bytes(32)
        self._token: bytes | None = None
        self._token_digest = b""
        self.set_token(token)

    def __repr__(self) -> str:
        return f"Guard(enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        """Whether a token is configured (without one the console is read-only)."""
        return self._token is not None

    def set_token(self, token: str | None) -> None:
        """The token to check from now on (a reload may rotate it; None: read-only)."""
        self._token = token.encode() if token else None
        self._token_digest = hashlib.sha256(self._token or b"").digest()

    def token_matches(self, presented: str) -> bool:
        """Whether ``presented`` is the token, compared in constant time."""
        given = presented.strip().encode("utf-8", "replace")
        return self._token is not None and hmac.compare_digest(given, self._token)

    def bearer_matches(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries the token."""
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(given)

    def _mac(self, purpose: str, text: str) -> str:
        message = purpose.encode() + b"\0" + self._token_digest + text.encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def new_session(self, now_ms: int) -> str:
        """A cookie value for a session that began at ``now_ms``."""
        expiry = str(now_ms + SESSION_MS)
        return f"{expiry}.{self._mac('session', expiry)}"

    def session_valid(self, cookie: str | None, now_ms: int) -> bool:
        """Whether ``cookie`` is a live session under the current token."""
        if not cookie or self._token is None:
            return False
        expiry, _, mac = cookie.partition(".")
        if not expiry.isdigit() or int(expiry) <= now_ms:
            return False
        return hmac.compare_digest(mac, self._mac("session", expiry))

    def csrf_token(self, cookie: str) -> str:
        """The CSRF token the console's forms carry for the session ``cookie``."""
        return self._mac("csrf", cookie)

    def csrf_valid(self, cookie: str, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.csrf_token(cookie).encode())


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether a browser says the request comes from a page of this host.

    ``Origin`` names the page's origin on every POST a browser sends; it must name the host
    the request was sent to (scheme aside: a proxy may end TLS), as ``Host`` or a proxy's
    ``X-Forwarded-Host`` says (a page on another site can set neither). ``Sec-Fetch-Site`` is
    the browser's own verdict. A client that sends neither is not a browser, nor forged by one.
    """
    origin = headers.get("Origin")
    if origin is not None:
        hosts = {headers.get("Host"), headers.get("X-Forwarded-Host")} - {None, ""}
        if origin == "null" or urlsplit(origin).netloc not in hosts:
            return False
    return headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
