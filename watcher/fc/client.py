"""The aiohttp client for FC 2.0 stateful async invocations and FC 3.0 async tasks.

It builds a path from validated identifiers, signs the request (ACS3 by default, legacy FC on
request), sends it over a shared session, and returns a typed model or raises a typed error from
``watcher.fc.errors``. It never retries: retry policy belongs to the scheduler, which knows what
else is due. ``request_base`` and ``sign`` are pure, so what goes on the wire is testable without
a network.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import aiohttp

from watcher.core.invocation import FunctionRef, Invocation, InvocationRef
from watcher.core.redact import scrub
from watcher.fc.credentials import Credentials, CredentialSource
from watcher.fc.endpoint import Endpoint
from watcher.fc.errors import BadResponseError, FcError, TransportError, classify_response
from watcher.fc.models import InvocationPage, ListFilter, parse_invocation, parse_page
from watcher.fc.requests import DateCache, Operation, RequestBase, request_base, sign
from watcher.fc.signing import SignatureScheme

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # returnPayload alone may be 1 MB; leave room, cap abuse
_MAX_CACHED_BASES = 32_768
"""Prepared Gets kept (about 2 KB each). Invocations polled by Get are polled every interval
and stay cached; one watched by List calls is fetched only when it changes, and must not keep
a prepared request for ever (at 100,000 tracked that was 200 MB for nothing): least recently
used first out."""


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
        self._dates = DateCache()
        self._get_bases: OrderedDict[str, RequestBase] = OrderedDict()

    def __repr__(self) -> str:
        return f"FcClient(endpoint={self._endpoint.base_url!r}, scheme={self._scheme.value!r})"

    async def get_invocation_body(self, ref: InvocationRef) -> bytes:
        """The raw body of a Get call: lets a caller skip parsing when nothing changed."""
        credentials = await self._credentials.get()
        bases = self._get_bases
        base = bases.get(ref.key)
        if base is None or base.credentials != credentials:
            if len(bases) >= _MAX_CACHED_BASES:
                bases.popitem(last=False)
            base = self._base(
                Operation.GET, "GET", ref.function_ref, ref.invocation_id, {}, credentials
            )
            bases[ref.key] = base
        else:
            bases.move_to_end(ref.key)
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
