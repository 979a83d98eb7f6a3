"""Request signing for the Function Compute API: ACS3-HMAC-SHA256, the legacy FC scheme, ROA v2.

Pure functions only: no I/O, no clock, no randomness. Callers pass the date and the nonce, so the
output for given inputs never changes, and ``tests/data/vectors.json`` (captured from the official
SDKs) pins every byte of it. The emulator verifies requests with these same functions, which is
safe because the vectors prove them against the SDKs independently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote

ACS3_ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_BODY_SHA256_HEX = hashlib.sha256(b"").hexdigest()


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as the SDKs sign it: only unreserved characters stay bare.

    ``/`` inside a value becomes ``%2F`` and a space ``%20`` (never ``+``).
    """
    return quote(value, safe="~")


def encode_path(segments: Iterable[str]) -> str:
    """Join path segments into an absolute path, each segment percent-encoded on its own."""
    return "".join("/" + percent_encode(segment) for segment in segments)


def canonical_query(query: Mapping[str, str]) -> str:
    """Sorted ``k=v`` pairs joined by ``&``, values percent-encoded; empty for no query.

    The watcher also puts exactly this string on the wire, so what is signed is what is sent.
    """
    return "&".join(f"{key}={percent_encode(query[key])}" for key in sorted(query))


def _hmac_sha256(secret: str, message: str) -> bytes:
    return hmac.digest(secret.encode(), message.encode(), "sha256")


@dataclass(frozen=True, slots=True)
class Acs3Signature:
    """Every intermediate of an ACS3 signature, so a mismatch can be located when debugging."""

    canonical_request: str
    string_to_sign: str
    signed_headers: str
    authorization: str


def acs3_canonical_request(
    method: str,
    pathname: str,
    query: Mapping[str, str],
    headers: Iterable[tuple[str, str]],
    payload_sha256_hex: str,
) -> tuple[str, str]:
    """Return (canonical request, SignedHeaders) for ACS3.

    ``pathname`` is the encoded path exactly as sent. Every header given is signed: names
    lower-cased and sorted, values trimmed, repeated names joined by ``,``.
    """
    merged: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        merged[lowered] = (
            f"{merged[lowered]},{value.strip()}" if lowered in merged else value.strip()
        )
    names = sorted(merged)
    canonical_headers = "".join([f"{name}:{merged[name]}\n" for name in names])
    signed_headers = ";".join(names)
    canonical = "\n".join(
        (
            method.upper(),
            pathname,
            canonical_query(query),
            canonical_headers,
            signed_headers,
            payload_sha256_hex,
        )
    )
    return canonical, signed_headers


def acs3_sign(
    *,
    method: str,
    pathname: str,
    query: Mapping[str, str],
    headers: Iterable[tuple[str, str]],
    payload_sha256_hex: str,
    access_key_id: str,
    access_key_secret: str,
) -> Acs3Signature:
    """Sign a request with ACS3-HMAC-SHA256, as the current official SDKs do by default."""
    canonical, signed_headers = acs3_canonical_request(
        method, pathname, query, headers, payload_sha256_hex
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"{ACS3_ALGORITHM}\n{digest}"
    signature = _hmac_sha256(access_key_secret, string_to_sign).hex()
    authorization = (
        f"{ACS3_ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )
    return Acs3Signature(canonical, string_to_sign, signed_headers, authorization)


_DATE_MARK = "\x00date\x00"
_NONCE_MARK = "\x00nonce\x00"


@dataclass(frozen=True, slots=True)
class Acs3Template:
    """An ACS3 canonical request with only ``x-acs-date`` and the nonce left open.

    A tracked invocation is polled with the same path, query and headers every time except
    those two, so its canonical request is built once (by ``acs3_canonical_request`` itself,
    with marks in the open places) and each poll only fills them in and hashes. Signing showed
    in the polling path's profile; the output is the generic signer's, byte for byte.
    """

    # The canonical request holds the signed headers' values, an STS token among them.
    head: str = field(repr=False)
    middle: str = field(repr=False)
    tail: str = field(repr=False)
    signed_headers: str

    @classmethod
    def build(
        cls,
        method: str,
        pathname: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        payload_sha256_hex: str,
    ) -> Acs3Template:
        """``headers`` are all signed headers except x-acs-date and x-acs-signature-nonce."""
        marked = {**headers, "x-acs-date": _DATE_MARK, "x-acs-signature-nonce": _NONCE_MARK}
        canonical, signed_headers = acs3_canonical_request(
            method, pathname, query, marked.items(), payload_sha256_hex
        )
        head, _, rest = canonical.partition(_DATE_MARK)
        middle, _, tail = rest.partition(_NONCE_MARK)
        return cls(head, middle, tail, signed_headers)

    def authorization(
        self, *, iso_date: str, nonce: str, access_key_id: str, access_key_secret: str
    ) -> str:
        """The Authorization value for this request at ``iso_date`` with ``nonce``."""
        canonical = f"{self.head}{iso_date}{self.middle}{nonce}{self.tail}"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        signature = _hmac_sha256(access_key_secret, f"{ACS3_ALGORITHM}\n{digest}").hex()
        return (
            f"{ACS3_ALGORITHM} Credential={access_key_id},"
            f"SignedHeaders={self.signed_headers},Signature={signature}"
        )


@dataclass(frozen=True, slots=True)
class SimpleSignature:
    """String to sign and Authorization value of the FC and ROA v2 schemes."""

    string_to_sign: str
    authorization: str


def fc_string_to_sign(method: str, decoded_path: str, headers: Mapping[str, str]) -> str:
    """The legacy FC string to sign for a control-plane request.

    ``headers`` must have lower-case names. The query is not part of it: for control-plane
    calls FC signs the decoded path only.
    """
    fc_headers = sorted(
        (name, value) for name, value in headers.items() if name.startswith("x-fc-")
    )
    canonical_fc_headers = "".join(f"{name}:{value}\n" for name, value in fc_headers)
    return (
        f"{method.upper()}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}\n"
        f"{headers['date']}\n{canonical_fc_headers}{decoded_path}"
    )


def fc_sign(
    *,
    method: str,
    decoded_path: str,
    headers: Mapping[str, str],
    access_key_id: str,
    access_key_secret: str,
) -> SimpleSignature:
    """Sign with the legacy ``FC ak:base64(hmac-sha256)`` scheme."""
    string_to_sign = fc_string_to_sign(method, decoded_path, headers)
    signature = base64.b64encode(_hmac_sha256(access_key_secret, string_to_sign)).decode()
    return SimpleSignature(string_to_sign, f"FC {access_key_id}:{signature}")


def roa_v2_sign(
    *,
    method: str,
    pathname: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    access_key_id: str,
    access_key_secret: str,
) -> SimpleSignature:
    """Sign with the ROA v2 ``acs`` scheme (HMAC-SHA1), which the SDKs use only on request.

    ``headers`` must have lower-case names. Kept so the emulator can accept the official SDK in
    that mode too; the watcher itself sends ACS3 or FC.
    """
    acs_headers = sorted(
        (name, value) for name, value in headers.items() if name.startswith("x-acs-")
    )
    resource = pathname
    if query:
        pairs = (f"{key}={query[key]}" if query[key] else key for key in sorted(query))
        resource += "?" + "&".join(pairs)
    string_to_sign = (
        f"{method.upper()}\n{headers.get('accept', '')}\n{headers.get('content-md5', '')}\n"
        f"{headers.get('content-type', '')}\n{headers.get('date', '')}\n"
        + "".join(f"{name}:{value}\n" for name, value in acs_headers)
        + resource
    )
    digest = hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return SimpleSignature(
        string_to_sign, f"acs {access_key_id}:{base64.b64encode(digest).decode()}"
    )


class SignatureScheme(StrEnum):
    """How requests are signed."""

    ACS3 = "acs3"
    """ACS3-HMAC-SHA256: what the current official SDKs send (the default)."""
    FC = "fc"
    """The legacy ``FC ak:signature`` scheme of FC's own documentation and older SDKs."""
