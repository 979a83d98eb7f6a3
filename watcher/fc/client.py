"""The aiohttp client for FC 2.0 stateful async invocations and FC 3.0 async tasks.

It builds a path from validated identifiers, signs the request (ACS3 by default, legacy FC on
request), sends it over a shared session, and returns a typed model or raises a typed error from
``watcher.fc.errors``. It never retries: retry policy belongs to the scheduler, which knows what
else is due. ``request_base`` and ``sign`` are pure, so what goes on the wire is testable without
a network.
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
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
    url: URL
    headers: dict[str, str] = field(repr=False)  # the signature, an STS token


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


@dataclass(frozen=True, slots=True)
class RequestBase:
    """One call on one target with one set of credentials, less what changes per request
    (dates, nonce, signature). A tracked invocation is polled with the same one every time, so
    the client builds it once per invocation; building it showed in the polling profile."""

    method: str
    url: URL
    decoded_path: str
    headers: dict[str, str] = field(repr=False)  # an STS token
    acs3_template: signing.Acs3Template | None = field(repr=False)
    credentials: Credentials


def request_base(
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
) -> RequestBase:
    """Everything about a request that does not change from one send to the next. Pure."""
    path = request_path(operation, function_ref, invocation_id)
    query_string = signing.canonical_query(query)
    url = endpoint.base_url + path + ("?" + query_string if query_string else "")
    headers = {
        "host": endpoint.host,
        "accept": "application/json",
        "user-agent": USER_AGENT,
        "x-fc-account-id": account_id,
    }
    template = None
    token = credentials.security_token
    if scheme is SignatureScheme.ACS3:
        api = function_ref.api
        headers["x-acs-action"] = operation.value if api is Api.FC2 else _FC3_ACTION[operation]
        headers["x-acs-version"] = API_VERSION[api]
        headers["x-acs-content-sha256"] = signing.EMPTY_BODY_SHA256_HEX
        if token:
            headers["x-acs-accesskey-id"] = credentials.access_key_id
            headers["x-acs-security-token"] = token
        template = signing.Acs3Template.build(
            method, path, query, headers, signing.EMPTY_BODY_SHA256_HEX
        )
    elif token:
        headers["x-fc-security-token"] = token
    # yarl would parse the URL string again on every send; the URL is always the same.
    return RequestBase(
        method, URL(url, encoded=True), unquote(path), headers, template, credentials
    )


def sign(base: RequestBase, *, http_date: str, iso_date: str, nonce: str) -> PreparedRequest:
    """Date, nonce and signature on top of ``base``. Pure."""
    credentials = base.credentials
    if base.acs3_template is not None:
        headers = {**base.headers, "x-acs-date": iso_date, "x-acs-signature-nonce": nonce}
        headers["authorization"] = base.acs3_template.authorization(
            iso_date=iso_date,
            nonce=nonce,
            access_key_id=credentials.access_key_id,
            access_key_secret=credentials.access_key_secret,
        )
        return PreparedRequest(base.method, base.url, headers)
    headers = {**base.headers, "date": http_date}
    headers["authorization"] = signing.fc_sign(
        method=base.method,
        decoded_path=base.decoded_path,
        headers=headers,
        access_key_id=credentials.access_key_id,
        access_key_secret=credentials.access_key_secret,
    ).authorization
    return PreparedRequest(base.method, base.url, headers)


_MAX_CACHED_BASES = 100_000  # well above any tracked set; a bound, not a working size


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
        self._get_bases: dict[str, RequestBase] = {}

    def __repr__(self) -> str:
        return f"FcClient(endpoint={self._endpoint.base_url!r}, scheme={self._scheme.value!r})"

    async def get_invocation_body(self, ref: InvocationRef) -> bytes:
        """The raw body of a Get call: lets a caller skip parsing when nothing changed."""
        credentials = await self._credentials.get()
        base = self._get_bases.get(ref.key)
        if base is None or base.credentials != credentials:
            if len(self._get_bases) >= _MAX_CACHED_BASES:
                self._get_bases.clear()  # invocations dropped by reloads must not pile up
            base = self._base(
                Operation.GET, "GET", ref.function_ref, ref.invocation_id, {}, credentials
            )
            self._get_bases[ref.key] = base
        return await self._send(base)

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
        credentials = await self._credentials.get()
        base = self._base(operation, method, function_ref, invocation_id, query, credentials)
        return await self._send(base)

    def _base(
        self,
        operation: Operation,
        method: str,
        function_ref: FunctionRef,
        invocation_id: str | None,
        query: dict[str, str],
        credentials: Credentials,
    ) -> RequestBase:
        if function_ref.qualifier is not None:
            query["qualifier"] = function_ref.qualifier
        return request_base(
            operation=operation,
            method=method,
            function_ref=function_ref,
            invocation_id=invocation_id,
            query=query,
            endpoint=self._endpoint,
            account_id=self._account_id,
            credentials=credentials,
            scheme=self._scheme,
        )

    async def _send(self, base: RequestBase) -> bytes:
        """Sign ``base`` now and send it; every failure becomes a typed ``FcError``."""
        http_date, iso_date = self._dates.dates(self._clock())
        prepared = sign(base, http_date=http_date, iso_date=iso_date, nonce=os.urandom(16).hex())
        try:
            async with self._session.request(
                prepared.method,
                prepared.url,
                headers=prepared.headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await self._read_capped(response)
                if 200 <= response.status < 300:
                    return body
                secrets = base.credentials.secret_values()
                raise classify_response(response.status, body, response.headers, secrets=secrets)
        except FcError:
            raise
        except TimeoutError:
            raise TransportError(f"no answer from FC within {self._timeout_s:g} s") from None
        except aiohttp.ClientPayloadError:
            raise TransportError("FC's response was cut short") from None
        except aiohttp.ClientError as exc:
            reason = scrub(str(exc), base.credentials.secret_values())[:200]
            raise TransportError(f"{type(exc).__name__}: {reason}") from None

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self._max_body_bytes
        declared = response.content_length
        if declared is not None:
            if declared > cap:
                raise BadResponseError(
                    f"response of {declared} bytes is over the {cap}-byte cap",
                    http_status=response.status,
                    request_id=response.headers.get("X-Fc-Request-Id", ""),
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
                    request_id=response.headers.get("X-Fc-Request-Id", ""),
                )
            chunks.append(chunk)
        return b"".join(chunks)
