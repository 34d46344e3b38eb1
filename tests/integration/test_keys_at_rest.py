"""Keys at rest: the file keystore (PKCS#8, 0600) and the database keystore (AES-256-GCM),
kid = RFC 7638 thumbprint, duplicate kids refused, rewrap under a new secret."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from sqlalchemy import select

from sts.app import create_app
from sts.db.models import SigningKey
from sts.errors import ConfigurationError, StartupError
from sts.keys.keystore import DatabaseKeyStore, FileKeyStore, make_keystore
from sts.keys.lifecycle import KeyLifecycleError, create_signing_key, rewrap
from sts.keys.material import generate_private_key, thumbprint
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


# ---- database keystore (AES-256-GCM under STS_KEY_ENCRYPTION_KEY) -------------------

KEK = base64.b64encode(b"k" * 32).decode()
OTHER_KEK = base64.b64encode(b"o" * 32).decode()
NEW_PASSPHRASE = "a brand new passphrase for the keys"


def signing_rows(app: Flask) -> list[SigningKey]:
    with app.extensions["sts"].session_factory() as session:
        return list(session.scalars(select(SigningKey)).all())


def test_database_keystore_keeps_keys_encrypted_in_the_row(  # type: ignore[no-untyped-def]
    empty_database_url, make_settings, clock
) -> None:
    settings = make_settings(empty_database_url, keystore="database", key_encryption_key=KEK)
    app = create_app(settings, clock=clock)
    try:
        (row,) = signing_rows(app)
        assert key_files(settings.keys_dir) == []  # nothing on disk
        blob = row.encrypted_private_key
        assert blob is not None and blob[:1] == b"\x01"
        assert b"PRIVATE KEY" not in blob
        again = create_app(settings, clock=clock)
        assert again.extensions["sts"].keyring.signing_key().kid == row.kid
        again.extensions["sts"].engine.dispose()
    finally:
        app.extensions["sts"].engine.dispose()


def test_wrong_key_encryption_key_is_a_clear_error(  # type: ignore[no-untyped-def]
    empty_database_url, make_settings, clock
) -> None:
    settings = make_settings(empty_database_url, keystore="database", key_encryption_key=KEK)
    create_app(settings, clock=clock).extensions["sts"].engine.dispose()
    with pytest.raises(StartupError) as caught:
        create_app(settings.replace(key_encryption_key=OTHER_KEK), clock=clock)
    message = str(caught.value)
    assert message.startswith("STS_KEY_ENCRYPTION_KEY does not decrypt signing key ")
    assert "wrong key-encryption key" in message
    assert OTHER_KEK not in message and KEK not in message


def test_the_kid_is_bound_to_the_ciphertext() -> None:
    """A blob copied onto another key's row does not decrypt (kid = associated data)."""
    store = DatabaseKeyStore(b"k" * 32)
    private_key = generate_private_key("ES256")
    blob = store.store(thumbprint(private_key), private_key)
    assert store.load(thumbprint(private_key), blob) is not None
    with pytest.raises(StartupError, match="STS_KEY_ENCRYPTION_KEY does not decrypt signing key"):
        store.load("another-kid", blob)


@pytest.mark.parametrize("keystore", ["file", "database"])
def test_duplicate_kid_is_refused(  # type: ignore[no-untyped-def]
    keystore, empty_database_url, make_settings, clock
) -> None:
    settings = make_settings(empty_database_url, keystore=keystore, key_encryption_key=KEK)
    app = create_app(settings, clock=clock)
    services = app.extensions["sts"]
    store = make_keystore(settings)
    private_key = generate_private_key("ES256")
    kid = thumbprint(private_key)
    try:
        with services.session_factory() as session:
            create_signing_key(session, store, "ES256", "pending", clock(), private_key)
            session.commit()
        with services.session_factory() as session, pytest.raises(KeyLifecycleError) as caught:
            create_signing_key(session, store, "ES256", "pending", clock(), private_key)
        assert str(caught.value) == f"duplicate kid {kid}: a signing key with this kid exists"
    finally:
        services.engine.dispose()


def test_file_keystore_never_overwrites_a_kid(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path, TEST_PASSPHRASE)
    private_key = generate_private_key("ES256")
    kid = thumbprint(private_key)
    store.store(kid, private_key)
    with pytest.raises(StartupError) as caught:
        store.store(kid, generate_private_key("ES256"))
    assert str(caught.value) == f"duplicate kid {kid}: {tmp_path / kid}.pem already exists"


def test_rewrap_under_a_new_passphrase(  # type: ignore[no-untyped-def]
    app, make_settings, empty_database_url, clock
) -> None:
    services = app.extensions["sts"]
    kid = services.keyring.signing_key().kid
    result = rewrap(services.settings, services.session_factory, "file", NEW_PASSPHRASE)
    assert (result.rewrapped, result.already_done) == ([kid], [])
    (path,) = key_files(services.settings.keys_dir)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(StartupError, match="STS_KEY_PASSPHRASE does not decrypt"):
        create_app(make_settings(empty_database_url), clock=clock)
    new = create_app(make_settings(empty_database_url, key_passphrase=NEW_PASSPHRASE), clock=clock)
    assert new.extensions["sts"].keyring.signing_key().kid == kid
    new.extensions["sts"].engine.dispose()
    # Resumable: a second run (say after an interruption) finds nothing left to do.
    result = rewrap(services.settings, services.session_factory, "file", NEW_PASSPHRASE)
    assert (result.rewrapped, result.already_done) == ([], [kid])


def test_move_from_file_to_database_keystore_and_rewrap_the_kek(  # type: ignore[no-untyped-def]
    app, make_settings, empty_database_url, clock
) -> None:
    services = app.extensions["sts"]
    kid = services.keyring.signing_key().kid
    result = rewrap(services.settings, services.session_factory, "database", KEK)
    assert result.rewrapped == [kid]
    assert key_files(services.settings.keys_dir) == []  # moved, not copied
    database = make_settings(empty_database_url, keystore="database", key_encryption_key=KEK)
    moved = create_app(database, clock=clock)
    assert moved.extensions["sts"].keyring.signing_key().kid == kid
    # Then a new KEK: the old one no longer opens the key, the new one does.
    rewrap(database, services.session_factory, "database", OTHER_KEK)
    with pytest.raises(StartupError, match="STS_KEY_ENCRYPTION_KEY does not decrypt"):
        create_app(database, clock=clock)
    again = create_app(database.replace(key_encryption_key=OTHER_KEK), clock=clock)
    assert again.extensions["sts"].keyring.signing_key().kid == kid
    for instance in (moved, again):
        instance.extensions["sts"].engine.dispose()


def test_rewrap_refuses_a_weak_new_secret(app) -> None:  # type: ignore[no-untyped-def]
    services = app.extensions["sts"]
    with pytest.raises(ConfigurationError, match="STS_NEW_KEY_PASSPHRASE must be at least 12"):
        rewrap(services.settings, services.session_factory, "file", "short")
    with pytest.raises(ConfigurationError, match="STS_NEW_KEY_ENCRYPTION_KEY must decode to"):
        rewrap(services.settings, services.session_factory, "database", "c2hvcnQ=")


def test_database_keystore_reads_keys_still_in_files_while_moving(  # type: ignore[no-untyped-def]
    app, make_settings, empty_database_url, clock
) -> None:
    kid = app.extensions["sts"].keyring.signing_key().kid
    database = make_settings(empty_database_url, keystore="database", key_encryption_key=KEK)
    moving = create_app(database, clock=clock)  # STS_KEY_PASSPHRASE still set: reads the file
    assert moving.extensions["sts"].keyring.signing_key().kid == kid
    moving.extensions["sts"].engine.dispose()
    with pytest.raises(StartupError) as caught:
        create_app(database.replace(key_passphrase=None), clock=clock)
    assert str(caught.value) == (
        f"signing key {kid} has no private key in the database (it is in the file keystore): "
        "run `sts keys rewrap --to database`, see the key rotation runbook"
    )
