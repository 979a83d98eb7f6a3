"""Signature verification as FC's gateway does it: ACS3-HMAC-SHA256, legacy FC and ROA v2.

``verify`` is pure: it takes the request's parts and the wall time, and returns ``None`` when the
request is authentic or the (status, code, message) FC would answer with. Keeping it free of
aiohttp lets tests feed it any request shape.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from watcher.devtools.emulator.scenario import AccessKey
from watcher.fc import signing


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request was refused, in FC's terms."""

    http_status: int
    code: str
    message: str


SIGNATURE_MISMATCH = Denial(
    403,
    "SignatureNotMatch",
    "The request signature we calculated does not match the signature you provided. "
    "Check your access key and signing method.",
)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What verification needs of a request. ``headers`` names are lower-case."""

    method: str
    raw_path: str
    query: Mapping[str, str]
    headers: Mapping[str, Sequence[str]]
    body: bytes


def _one(headers: Mapping[str, Sequence[str]], name: str) -> str:
    values = headers.get(name)
    return values[0] if values else ""


def _parse_time(value: str, *, iso: bool) -> float | None:
    try:
        if iso:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _check_time(value: str, *, iso: bool, now_s: float, max_skew_s: float) -> Denial | None:
    when = _parse_time(value, iso=iso)
    if when is None:
        return Denial(400, "InvalidArgument", f"the request time {value!r} cannot be parsed")
    if abs(when - now_s) > max_skew_s:
        now_text = email.utils.formatdate(now_s, usegmt=True)
        return Denial(
            403,
            "RequestTimeTooSkewed",
            f"the difference between the request time '{value}' and the current time "
            f"'{now_text}' is too large",
        )
    return None


def _find_key(keys: Sequence[AccessKey], key_id: str) -> AccessKey | None:
    return next((key for key in keys if key.access_key_id == key_id), None)


def _check_token(key: AccessKey, presented: str) -> Denial | None:
    if key.security_token is None:
        return None
    if not hmac.compare_digest(presented.encode(), key.security_token.encode()):
        return Denial(403, "InvalidSecurityToken", "the security token is missing or invalid")
    return None


def _unknown_key(key_id: str) -> Denial:
    return Denial(403, "InvalidAccessKeyID", f"invalid access key ID '{key_id}'")


def _verify_acs3(
    request: SignedRequest, authorization: str, keys: Sequence[AccessKey]
) -> Denial | None:
    fields: dict[str, str] = {}
    for part in authorization[len(signing.ACS3_ALGORITHM) :].split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    key = _find_key(keys, fields.get("Credential", ""))
    if key is None:
        return _unknown_key(fields.get("Credential", ""))
    signed_names = [name for name in fields.get("SignedHeaders", "").split(";") if name]
    required = {"host"} | {name for name in request.headers if name.startswith("x-acs-")}
    if not required <= set(signed_names) or any(n not in request.headers for n in signed_names):
        return SIGNATURE_MISMATCH
    if _one(request.headers, "x-acs-content-sha256") != hashlib.sha256(request.body).hexdigest():
        return SIGNATURE_MISMATCH
    denial = _check_token(key, _one(request.headers, "x-acs-security-token"))
    if denial:
        return denial
    expected = signing.acs3_sign(
        method=request.method,
        pathname=request.raw_path,
        query=request.query,
        headers=[(name, ",".join(request.headers[name])) for name in signed_names],
        payload_sha256_hex=_one(request.headers, "x-acs-content-sha256"),
        access_key_id=key.access_key_id,
        access_key_secret=key.access_key_secret,
    )
    if not hmac.compare_digest(expected.authorization.encode(), authorization.encode()):
        return SIGNATURE_MISMATCH
    return None


def _verify_simple(
    request: SignedRequest, authorization: str, keys: Sequence[AccessKey]
) -> Denial | None:
    scheme, _, credential = authorization.partition(" ")
    key_id, _, _ = credential.rpartition(":")
    key = _find_key(keys, key_id)
    if key is None:
        return _unknown_key(key_id)
    flat = {name: values[0] for name, values in request.headers.items()}
    if scheme == "FC":
        denial = _check_token(key, flat.get("x-fc-security-token", ""))
        if denial:
            return denial
        expected = signing.fc_sign(
            method=request.method,
            decoded_path=unquote(request.raw_path),
            headers=flat,
            access_key_id=key.access_key_id,
            access_key_secret=key.access_key_secret,
        ).authorization
    else:
        denial = _check_token(key, flat.get("x-acs-security-token", ""))
        if denial:
            return denial
        expected = signing.roa_v2_sign(
            method=request.method,
            pathname=unquote(request.raw_path),
            query=request.query,
            headers=flat,
            access_key_id=key.access_key_id,
            access_key_secret=key.access_key_secret,
        ).authorization
    if not hmac.compare_digest(expected.encode(), authorization.encode()):
        return SIGNATURE_MISMATCH
    return None


def verify(
    request: SignedRequest, keys: Sequence[AccessKey], *, now_s: float, max_skew_s: float
) -> Denial | None:
    """``None`` if the request is signed by one of ``keys`` within the skew window."""
    authorization = _one(request.headers, "authorization")
    if authorization.startswith(signing.ACS3_ALGORITHM + " "):
        denial = _check_time(
            _one(request.headers, "x-acs-date"), iso=True, now_s=now_s, max_skew_s=max_skew_s
        )
        return denial or _verify_acs3(request, authorization, keys)
    if authorization.startswith(("FC ", "acs ")):
        denial = _check_time(
            _one(request.headers, "date"), iso=False, now_s=now_s, max_skew_s=max_skew_s
        )
        return denial or _verify_simple(request, authorization, keys)
    return SIGNATURE_MISMATCH
