"""The first signing key: generated, encrypted at rest, 0600, kid = RFC 7638 thumbprint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sts.app import create_app
from sts.errors import StartupError
from tests.conftest import TEST_PASSPHRASE


def rfc7638_thumbprint(jwk: dict[str, str]) -> str:
    """Written from RFC 7638 §3.2: required members only, lexicographic order, no spaces."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
        "RSA": ("e", "kty", "n"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def key_files(keys_dir: Path) -> list[Path]:
    return sorted(keys_dir.glob("*.pem"))


def test_first_start_generates_an_encrypted_es256_key(app, client) -> None:  # type: ignore[no-untyped-def]
    keys_dir = app.extensions["sts"].settings.keys_dir
    files = key_files(keys_dir)
    assert len(files) == 1
    assert os.stat(files[0]).st_mode & 0o777 == 0o600
    pem = files[0].read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # encrypted: unreadable without the passphrase
        serialization.load_pem_private_key(pem, None)
    serialization.load_pem_private_key(pem, TEST_PASSPHRASE.encode())

    (published,) = client.get("/jwks.json").json["keys"]
    assert published["alg"] == "ES256"
    assert published["crv"] == "P-256"
    assert published["use"] == "sig"
    assert published["kid"] == rfc7638_thumbprint(published)
    assert files[0].name == f"{published['kid']}.pem"
    assert "d" not in published  # never the private part


def test_restart_reuses_the_key(app, make_settings, empty_database_url, clock) -> None:  # type: ignore[no-untyped-def]
    first = app.test_client().get("/jwks.json").json
    again = create_app(make_settings(empty_database_url), clock=clock)
    assert again.test_client().get("/jwks.json").json == first
    again.extensions["sts"].engine.dispose()


def test_refuses_a_key_file_readable_by_others(app, make_settings, empty_database_url) -> None:  # type: ignore[no-untyped-def]
    (path,) = key_files(app.extensions["sts"].settings.keys_dir)
    path.chmod(0o644)
    with pytest.raises(StartupError, match=r"readable by group or others \(mode 0644\).*chmod 600"):
        create_app(make_settings(empty_database_url))


def test_wrong_passphrase_is_a_clear_error(app, make_settings, empty_database_url) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StartupError) as caught:
        create_app(make_settings(empty_database_url, key_passphrase="not the right passphrase"))
    message = str(caught.value)
    assert message.startswith("STS_KEY_PASSPHRASE does not decrypt")
    assert "not the right passphrase" not in message


def test_missing_key_file_is_a_clear_error(app, make_settings, empty_database_url) -> None:  # type: ignore[no-untyped-def]
    (path,) = key_files(app.extensions["sts"].settings.keys_dir)
    path.unlink()
    with pytest.raises(StartupError, match="is missing from the keystore"):
        create_app(make_settings(empty_database_url))
