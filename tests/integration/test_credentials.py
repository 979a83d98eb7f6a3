"""Credentials: static values, and the official default chain, without ever leaking a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.fc.credentials import Credentials, StaticCredentialSource

PROBE = """
import asyncio, json
from watcher.fc.credentials import DefaultChainCredentialSource, CredentialsUnavailableError
async def main():
    source = DefaultChainCredentialSource()
    try:
        creds = await source.get()
    except CredentialsUnavailableError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    print(json.dumps({"id": creds.access_key_id, "secret": creds.access_key_secret,
                      "token": creds.security_token, "provider": creds.provider,
                      "repr": repr(creds)}))
asyncio.run(main())
"""


def _probe(tmp_path: Path, extra_env: dict[str, str]) -> dict[str, str]:
    """Run the default chain in a fresh interpreter (the library reads env vars at import)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        # Never let the chain reach for instance metadata or a user's real profile.
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true",
        **extra_env,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_default_chain_reads_the_environment(tmp_path: Path) -> None:
    """ALIBABA_CLOUD_* variables resolve through the official library's async API."""
    found = _probe(
        tmp_path,
        {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "env-key-id",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "env-token",
        },
    )
    assert (found["id"], found["secret"], found["token"]) == (
        "env-key-id",
        "env-secret",
        "env-token",
    )
    assert "env" in found["provider"]
    assert "env-secret" not in found["repr"]
    assert "env-token" not in found["repr"]
    assert "env-key-id" not in found["repr"]


def test_default_chain_reads_the_ini_file(tmp_path: Path) -> None:
    """~/.alibabacloud/credentials.ini is read when the environment has no keys."""
    ini = tmp_path / ".alibabacloud" / "credentials.ini"
    ini.parent.mkdir()
    ini.write_text(
        "[default]\ntype = access_key\naccess_key_id = ini-key-id\naccess_key_secret = ini-secret\n"
    )
    found = _probe(tmp_path, {})
    assert (found["id"], found["secret"]) == ("ini-key-id", "ini-secret")


def test_empty_chain_is_one_clear_error(tmp_path: Path) -> None:
    """With nothing configured, the error says what to set, in one line."""
    found = _probe(tmp_path, {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(tmp_path / "missing.ini")})
    assert "error" in found
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in found["error"]
    assert "fc.access_key_id" in found["error"]
    assert "\n" not in found["error"]


async def test_static_source_repr_hides_everything() -> None:
    """Neither the credentials nor their source show a key, secret or token in a repr."""
    creds = Credentials("LTAI_VISIBLE?", "SECRET_VISIBLE?", "TOKEN_VISIBLE?")
    source = StaticCredentialSource(creds)
    for text in (repr(creds), repr(source), str(creds)):
        assert "VISIBLE" not in text
    assert await source.get() is creds


@pytest.mark.parametrize("token", [None, "t"])
def test_secret_values_lists_what_to_scrub(token: str | None) -> None:
    """secret_values covers the key id, the secret and the token when there is one."""
    creds = Credentials("id", "secret", token)
    assert set(creds.secret_values()) == {"id", "secret"} | ({token} if token else set())
