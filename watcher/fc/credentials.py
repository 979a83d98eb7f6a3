"""Where request-signing credentials come from: explicit values, or Alibaba's default chain.

The client asks its source before every request. Static sources answer at once; the default
chain (``alibabacloud-credentials``, the official library) caches and refreshes STS credentials
itself, so a rotated key is picked up without a restart. Secrets never appear in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from watcher.fc.errors import AuthError


@dataclass(frozen=True, slots=True)
class Credentials:
    """One access key, with its STS token when the key is temporary."""

    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    provider: str = "static"

    def __repr__(self) -> str:
        kind = "sts" if self.security_token else "access-key"
        return f"Credentials(provider={self.provider!r}, kind={kind!r})"

    def secret_values(self) -> tuple[str, ...]:
        """Every value that must be scrubbed from text that leaves the process."""
        values = (self.access_key_id, self.access_key_secret, self.security_token or "")
        return tuple(value for value in values if value)


class CredentialSource(Protocol):
    """Anything that can hand out current credentials, asynchronously."""

    async def get(self) -> Credentials:
        """Return the credentials to sign the next request with."""
        ...


class StaticCredentialSource:
    """Credentials given in the config."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def __repr__(self) -> str:
        return f"StaticCredentialSource({self._credentials!r})"

    async def get(self) -> Credentials:
        return self._credentials


class CredentialsUnavailableError(AuthError):
    """The default chain found no usable credentials."""


class DefaultChainCredentialSource:
    """Alibaba Cloud's default credential chain: environment, OIDC/RRSA, the CLI profile,
    ``~/.alibabacloud/credentials.ini``, the ECS RAM role, a credentials URI.

    The library reads its environment variables when first imported, so the import happens
    here, when the source is built, not when this module is.
    """

    def __init__(self) -> None:
        from alibabacloud_credentials.client import Client

        self._client: Any = Client()

    def __repr__(self) -> str:
        return "DefaultChainCredentialSource()"

    async def get(self) -> Credentials:
        try:
            model = await self._client.get_credential_async()
        except Exception as exc:  # the library raises several unrelated types
            raise CredentialsUnavailableError(
                "no Alibaba Cloud credentials from the default chain "
                f"({type(exc).__name__}); set fc.access_key_id and fc.access_key_secret, "
                "or ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"
            ) from None
        return Credentials(
            access_key_id=str(model.access_key_id),
            access_key_secret=str(model.access_key_secret),
            security_token=str(model.security_token) if model.security_token else None,
            provider=str(model.provider_name or "default"),
        )
