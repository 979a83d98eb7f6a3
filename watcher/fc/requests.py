"""What goes on the wire for one FC call: its path, its headers and its signature. Pure.

``request_base`` builds what never changes between two sends of the same call; ``sign`` adds the
dates, the nonce and the signature. Both are pure, so what is sent is testable without a network.
"""

from __future__ import annotations

import email.utils
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote

from yarl import URL

from watcher.core.invocation import Api, FunctionRef
from watcher.fc import signing
from watcher.fc.credentials import Credentials
from watcher.fc.endpoint import Endpoint
from watcher.fc.signing import SignatureScheme

API_VERSION: Mapping[Api, str] = {Api.FC2: "2021-04-06", Api.FC3: "2023-03-30"}
USER_AGENT = "fc-watcher/0.1"


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


class DateCache:
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
