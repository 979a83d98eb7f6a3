"""Where FC requests go: an explicit URL, or the account's regional endpoint. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go: ``base_url`` is scheme://host[:port]; ``host`` is the Host header."""

    base_url: str
    host: str

    @property
    def is_insecure_remote(self) -> bool:
        """Plain http to something other than this machine: worth a warning."""
        parts = urlsplit(self.base_url)
        if parts.scheme != "http":
            return False
        hostname = parts.hostname or ""
        if hostname == "localhost":
            return False
        try:
            return not ipaddress.ip_address(hostname).is_loopback
        except ValueError:
            return True


def resolve_endpoint(
    account_id: str, region: str, *, internal: bool = False, url: str | None = None
) -> Endpoint:
    """The FC endpoint: an explicit URL, or ``https://{account}.{region}[-internal].fc...``."""
    if url is None:
        suffix = "-internal" if internal else ""
        url = f"https://{account_id}.{region}{suffix}.fc.aliyuncs.com"
    parts = urlsplit(url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise ValueError(f"endpoint {url!r} must look like https://host[:port], with no path")
    return Endpoint(base_url=f"{parts.scheme}://{parts.netloc}", host=parts.netloc)
