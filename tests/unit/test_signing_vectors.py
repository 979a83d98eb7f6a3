"""Every signing vector captured from the official SDKs is reproduced byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.fc import signing

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "vectors.json").read_text())
FIXED = VECTORS["fixed_inputs"]


def _reproducible(group: str) -> list[dict[str, Any]]:
    return [v for v in VECTORS[group] if "contrast only" not in v["name"]]


def _secret_and_id() -> tuple[str, str]:
    return FIXED["access_key_secret"], FIXED["access_key_id"]


FC_VECTORS = _reproducible("legacy_fc_signature")
ACS3_VECTORS = [
    v
    for group in ("tea_acs3_fc_2021_04_06", "tea_acs3_fc_2023_03_30")
    for v in _reproducible(group)
    if v["scheme"] == "ACS3-HMAC-SHA256"
]
ROA_VECTORS = [v for v in _reproducible("tea_acs3_fc_2021_04_06") if v["scheme"].startswith("ROA")]


def test_vector_counts_cover_the_file() -> None:
    """No reproducible vector is silently skipped: 15 ACS3/FC/ROA vectors plus 2 contrast-only."""
    total = sum(len(VECTORS[g]) for g in VECTORS if isinstance(VECTORS[g], list))
    assert len(FC_VECTORS) + len(ACS3_VECTORS) + len(ROA_VECTORS) == total - 2
    assert len(ACS3_VECTORS) == 12
    assert len(FC_VECTORS) == 7
    assert len(ROA_VECTORS) == 1


@pytest.mark.parametrize("vector", FC_VECTORS, ids=lambda v: v["name"])
def test_fc_vector(vector: dict[str, Any]) -> None:
    """The legacy FC signer gives the SDK's string to sign and Authorization."""
    secret, key_id = _secret_and_id()
    headers = {k.lower(): v for k, v in vector["signed_inputs"].items()}
    result = signing.fc_sign(
        method=vector["method"],
        decoded_path=vector["path_signed"],
        headers=headers,
        access_key_id=key_id,
        access_key_secret=secret,
    )
    assert result.string_to_sign == vector["string_to_sign"]
    assert result.authorization == vector["authorization"]


@pytest.mark.parametrize("vector", ACS3_VECTORS, ids=lambda v: v["name"])
def test_acs3_vector(vector: dict[str, Any]) -> None:
    """The ACS3 signer gives the SDK's canonical request, string to sign and Authorization."""
    secret, key_id = _secret_and_id()
    headers = vector["signed_or_sent_headers"]
    result = signing.acs3_sign(
        method=vector["method"],
        pathname=vector["pathname_signed"],
        query=vector["query"],
        headers=headers.items(),
        payload_sha256_hex=headers["x-acs-content-sha256"],
        access_key_id=key_id,
        access_key_secret=secret,
    )
    assert result.canonical_request == vector["canonical_request"]
    assert result.string_to_sign == vector["string_to_sign"]
    assert result.authorization == vector["authorization"]


@pytest.mark.parametrize("vector", ROA_VECTORS, ids=lambda v: v["name"])
def test_roa_v2_vector(vector: dict[str, Any]) -> None:
    """The ROA v2 signer gives the SDK's string to sign and Authorization."""
    secret, key_id = _secret_and_id()
    headers = {k.lower(): v for k, v in vector["signed_or_sent_headers"].items()}
    result = signing.roa_v2_sign(
        method=vector["method"],
        pathname=vector["pathname_signed"],
        query=vector["query"],
        headers=headers,
        access_key_id=key_id,
        access_key_secret=secret,
    )
    assert result.string_to_sign == vector["string_to_sign"]
    assert result.authorization == vector["authorization"]


def test_path_encoding_matches_sdk_for_odd_names() -> None:
    """Encoding each segment reproduces the SDK's signed path for a slash, a space and UTF-8."""
    vector = next(v for v in ACS3_VECTORS if v["name"] == "tea21-get-stateful-odd-chars")
    path = signing.encode_path(
        [
            "2021-04-06",
            "services",
            FIXED["odd_service"],
            "functions",
            FIXED["function"],
            "stateful-async-invocations",
            FIXED["odd_invocation_id"],
        ]
    )
    assert path == vector["pathname_signed"]


ascii_values = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT"]),
    segments=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6),
    query=st.dictionaries(
        st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True), st.text(max_size=12), max_size=4
    ),
    headers=st.dictionaries(
        st.from_regex(r"x-(acs|fc)-[a-z]{1,10}", fullmatch=True), ascii_values, max_size=5
    ),
    iso_date=ascii_values,
    nonce=ascii_values,
    secret=ascii_values,
)
def test_acs3_template_signs_exactly_like_the_generic_signer(
    method: str,
    segments: list[str],
    query: dict[str, str],
    headers: dict[str, str],
    iso_date: str,
    nonce: str,
    secret: str,
) -> None:
    """The per-invocation template gives the generic signer's Authorization for any request."""
    headers = {k: v for k, v in headers.items() if k not in ("x-acs-date", "x-acs-signature-nonce")}
    headers["host"] = "127.0.0.1:9000"
    path = signing.encode_path(segments)
    template = signing.Acs3Template.build(
        method, path, query, headers, signing.EMPTY_BODY_SHA256_HEX
    )
    generic = signing.acs3_sign(
        method=method,
        pathname=path,
        query=query,
        headers=[*headers.items(), ("x-acs-date", iso_date), ("x-acs-signature-nonce", nonce)],
        payload_sha256_hex=signing.EMPTY_BODY_SHA256_HEX,
        access_key_id="AK",
        access_key_secret=secret,
    )
    fast = template.authorization(
        iso_date=iso_date, nonce=nonce, access_key_id="AK", access_key_secret=secret
    )
    assert fast == generic.authorization
