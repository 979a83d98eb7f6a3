"""The aiohttp client for FC 2.0 stateful async invocations and FC 3.0 async tasks.

It builds a path from validated identifiers, signs the request (ACS3 by default, legacy FC on
request), sends it over a shared session, and returns a typed model or raises a typed error from
``watcher.fc.errors``. It never retries: retry policy belongs to the scheduler, which knows what
else is due. ``prepare_request`` is pure, so what goes on the wire is testable without a network.
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from watcher.fc import signing
from watcher.fc.credentials import Credentials, CredentialSource
from watcher.fc.errors import (
    BadResponseError,
    FcError,
    TransportError,
    classify_response,
    scrub,
)
from watcher.fc.models import (
    Api,
    FunctionRef,
    Invocation,
    InvocationPage,
    InvocationRef,
    ListFilter,
    parse_invocation,
    parse_page,
)

API_VERSION: Mapping[Api, str] = {Api.FC2: "2021-04-06", Api.FC3: "2023-03-30"}
USER_AGENT = "fc-watcher/0.1"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # returnPayload alone may be 1 MB; leave room, cap abuse


class SignatureScheme(StrEnum):
    """How requests are signed."""

    ACS3 = "acs3"
    """ACS3-HMAC-SHA256: what the current official SDKs send (the default)."""
    FC = "fc"
    """The legacy ``FC ak:signature`` scheme of FC's own documentation and older SDKs."""


class Operation(StrEnum):
    """The three calls the watcher makes; values are the FC 2.0 action names."""

    GET = "GetStatefulAsyncInvocation"
    LIST = "ListStatefulAsyncInvocations"
    STOP = "StopStatefulAsyncInvocation"


_FC3_ACTION = {
    Operation.GET: "GetAsyncTask",
    Operation.LIST: "ListAsyncTasks",
    Operation.STOP: "StopAsyncTask",
}


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


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A signed request, ready to send."""

    method: str
    url: str
    headers: dict[str, str]


@functools.lru_cache(maxsize=65_536)
def request_path(operation: Operation, function_ref: FunctionRef, invocation_id: str | None) -> str:
    """The encoded request path. Identifiers were validated when the refs were built.

    Cached: a tracked invocation's path never changes, and encoding it showed in profiles.
    """
    version = API_VERSION[function_ref.api]
    segments: list[str] = [version]
    if function_ref.api is Api.FC2:
        assert function_ref.service is not None
        segments += ["services", function_ref.service, "functions", function_ref.function]
        segments.append("stateful-async-invocations")
    else:
        segments += ["functions", function_ref.function, "async-tasks"]
    if invocation_id is not None:
        segments.append(invocation_id)
        if operation is Operation.STOP and function_ref.api is Api.FC3:
            segments.append("stop")
    return signing.encode_path(segments)


class _DateCache:
    """Formatting two dates per request shows in profiles; they change once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._http = ""
        self._iso = ""

    def dates(self, now_s: float) -> tuple[str, str]:
        second = int(now_s)
        if second != self._second:
            self._second = second
            self._http = email.utils.formatdate(second, usegmt=True)
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._http, self._iso


@functools.lru_cache(maxsize=65_536)
def _acs3_base(
    operation: Operation,
    method: str,
    function_ref: FunctionRef,
    invocation_id: str | None,
    query: tuple[tuple[str, str], ...],
    host: str,
    account_id: str,
    access_key_id: str,
    security_token: str | None,
) -> tuple[dict[str, str], signing.Acs3Template]:
    """The headers and canonical-request template that stay the same from poll to poll."""
    api = function_ref.api
    headers = {
        "host": host,
        "accept": "application/json",
        "user-agent": USER_AGENT,
        "x-fc-account-id": account_id,
        "x-acs-action": operation.value if api is Api.FC2 else _FC3_ACTION[operation],
        "x-acs-version": API_VERSION[api],
        "x-acs-content-sha256": signing.EMPTY_BODY_SHA256_HEX,
    }
    if security_token:
        headers["x-acs-accesskey-id"] = access_key_id
        headers["x-acs-security-token"] = security_token
    template = signing.Acs3Template.build(
        method,
        request_path(operation, function_ref, invocation_id),
        dict(query),
        headers,
        signing.EMPTY_BODY_SHA256_HEX,
    )
    return headers, template


def prepare_request(
    *,
    operation: Operation,
    method: str,
    function_ref: FunctionRef,
    invocation_id: str | None,
    query: Mapping[str, str],
    endpoint: Endpoint,
    account_id: str,
    credentials: Credentials,
    scheme: SignatureScheme,
    http_date: str,
    iso_date: str,
    nonce: str,
) -> PreparedRequest:
    """Build and sign one request. Pure: date and nonce come from the caller."""
    path = request_path(operation, function_ref, invocation_id)
    query_string = signing.canonical_query(query)
    url = endpoint.base_url + path + ("?" + query_string if query_string else "")
    if scheme is SignatureScheme.ACS3:
        base, template = _acs3_base(
            operation,
            method,
            function_ref,
            invocation_id,
            tuple(sorted(query.items())),
            endpoint.host,
            account_id,
            credentials.access_key_id,
            credentials.security_token,
        )
        headers = {**base, "x-acs-date": iso_date, "x-acs-signature-nonce": nonce}
        headers["authorization"] = template.authorization(
            iso_date=iso_date,
            nonce=nonce,
            access_key_id=credentials.access_key_id,
            access_key_secret=credentials.access_key_secret,
        )
        return PreparedRequest(method, url, headers)
    headers = {
        "host": endpoint.host,
        "accept": "application/json",
        "user-agent": USER_AGENT,
        "x-fc-account-id": account_id,
        "date": http_date,
    }
    if credentials.security_token:
        headers["x-fc-security-token"] = credentials.security_token
    headers["authorization"] = signing.fc_sign(
        method=method,
        decoded_path=unquote(path),
        headers=headers,
        access_key_id=credentials.access_key_id,
        access_key_secret=credentials.access_key_secret,
    ).authorization
    return PreparedRequest(method, url, headers)


@functools.lru_cache(maxsize=65_536)
def _url(url: str) -> URL:
    # yarl parses every URL it is given; a tracked invocation's URL is always the same string.
    return URL(url, encoded=True)


class FcClient:
    """Talks to one FC endpoint for one account over a caller-owned ``ClientSession``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: Endpoint,
        account_id: str,
        credentials: CredentialSource,
        scheme: SignatureScheme = SignatureScheme.ACS3,
        timeout_s: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._endpoint = endpoint
        self._account_id = account_id
        self._credentials = credentials
        self._scheme = scheme
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._dates = _DateCache()

    def __repr__(self) -> str:
        return f"FcClient(endpoint={self._endpoint.base_url!r}, scheme={self._scheme.value!r})"

    async def get_invocation_body(self, ref: InvocationRef) -> bytes:
        """The raw body of a Get call: lets a caller skip parsing when nothing changed."""
        return await self._call(Operation.GET, "GET", ref.function_ref, ref.invocation_id, {})

    async def get_invocation(self, ref: InvocationRef) -> Invocation:
        """Fetch and parse one invocation."""
        return parse_invocation(await self.get_invocation_body(ref))

    async def list_invocations_page(
        self,
        function_ref: FunctionRef,
        list_filter: ListFilter | None = None,
        next_token: str | None = None,
    ) -> InvocationPage:
        """One page of the List call."""
        query = (list_filter or ListFilter()).query(function_ref.api)
        if next_token:
            query["nextToken"] = next_token
        body = await self._call(Operation.LIST, "GET", function_ref, None, query)
        return parse_page(body)

    async def list_invocations(
        self, function_ref: FunctionRef, list_filter: ListFilter | None = None
    ) -> AsyncIterator[Invocation]:
        """Every invocation matching ``list_filter``, following ``nextToken`` to the end."""
        next_token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            page = await self.list_invocations_page(function_ref, list_filter, next_token)
            for invocation in page.invocations:
                yield invocation
            if not page.next_token:
                return
            if page.next_token in seen_tokens:
                raise BadResponseError("List returned a nextToken it had already returned")
            seen_tokens.add(page.next_token)
            next_token = page.next_token

    async def stop_invocation(self, ref: InvocationRef) -> None:
        """Ask FC to stop an invocation."""
        await self._call(Operation.STOP, "PUT", ref.function_ref, ref.invocation_id, {})

    async def _call(
        self,
        operation: Operation,
        method: str,
        function_ref: FunctionRef,
        invocation_id: str | None,
        query: dict[str, str],
    ) -> bytes:
        if function_ref.qualifier is not None:
            query["qualifier"] = function_ref.qualifier
        credentials = await self._credentials.get()
        http_date, iso_date = self._dates.dates(self._clock())
        prepared = prepare_request(
            operation=operation,
            method=method,
            function_ref=function_ref,
            invocation_id=invocation_id,
            query=query,
            endpoint=self._endpoint,
            account_id=self._account_id,
            credentials=credentials,
            scheme=self._scheme,
            http_date=http_date,
            iso_date=iso_date,
            nonce=os.urandom(16).hex(),
        )
        try:
            return await self._send(prepared, credentials.secret_values())
        except FcError:
            raise
        except TimeoutError:
            raise TransportError(f"no answer from FC within {self._timeout_s:g} s") from None
        except aiohttp.ClientPayloadError:
            raise TransportError("FC's response was cut short") from None
        except aiohttp.ClientError as exc:
            reason = scrub(str(exc), credentials.secret_values())[:200]
            raise TransportError(f"{type(exc).__name__}: {reason}") from None

    async def _send(self, prepared: PreparedRequest, secrets: tuple[str, ...]) -> bytes:
        async with self._session.request(
            prepared.method,
            _url(prepared.url),
            headers=prepared.headers,
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            request_id = response.headers.get("X-Fc-Request-Id", "")
            body = await self._read_capped(response, request_id)
            if 200 <= response.status < 300:
                return body
            raise classify_response(response.status, body, response.headers, secrets=secrets)

    async def _read_capped(self, response: aiohttp.ClientResponse, request_id: str) -> bytes:
        cap = self._max_body_bytes
        declared = response.content_length
        if declared is not None:
            if declared > cap:
                raise BadResponseError(
                    f"response of {declared} bytes is over the {cap}-byte cap",
                    http_status=response.status,
                    request_id=request_id,
                )
            return await response.read()
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(65536):
            total += len(chunk)
            if total > cap:
                raise BadResponseError(
                    f"response is over the {cap}-byte cap",
                    http_status=response.status,
                    request_id=request_id,
                )
            chunks.append(chunk)
        return b"".join(chunks)
