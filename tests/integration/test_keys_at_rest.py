"""Keys at rest: the file keystore (scrypt + AES-256-GCM bound to the kid, 0600; the old
PKCS#8 PBES2 files still read and converted by rewrap) and the database keystore
(AES-256-GCM), kid = RFC 7638 thumbprint, duplicate kids refused, rewrap under a new
secret."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from sqlalchemy import select

from sts.app import create_app
from sts.db.models import SigningKey
from sts.errors import ConfigurationError, StartupError
from sts.keys.keystore import (
    DatabaseKeyStore,
    FileKeyStore,
    development_passphrase_file,
    make_keystore,
    resolve_key_passphrase,
)
from sts.keys.lifecycle import KeyLifecycleError, create_signing_key, rewrap
from sts.keys.material import PrivateKey, generate_private_key, thumbprint
from sts.settings import Settings
from tests.conftest import TEST_PASSPHRASE, TEST_SCRYPT_LOG2_N

# The key file, version 2, as the README describes it: PEM around version, kdf (1: scrypt),
# log2(N), r, p, a 16-byte salt and a 12-byte nonce, then AES-256-GCM ciphertext and tag.
FILE_HEADER = struct.Struct(">BBBBB16s12s")
PKCS8_PBES2 = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


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


def file_header(path: Path) -> tuple[int, int, int, int, int, bytes, bytes]:
    """Read from the bytes, not through the keystore: (version, kdf, log2 N, r, p, salt,
    nonce) of a version 2 key file."""
    lines = path.read_text().strip().splitlines()
    assert lines[0] == "-----BEGIN STS ENCRYPTED PRIVATE KEY-----"
    assert lines[-1] == "-----END STS ENCRYPTED PRIVATE KEY-----"
    raw = base64.b64decode("".join(lines[1:-1]), validate=True)
    assert len(raw) > FILE_HEADER.size + 16  # a ciphertext and its GCM tag follow
    return FILE_HEADER.unpack(raw[: FILE_HEADER.size])  # type: ignore[return-value]


def write_legacy_file(path: Path, private_key: PrivateKey, passphrase: str) -> None:
    """A key file as earlier releases wrote it: PKCS#8 PBES2 (PBKDF2, 2048 rounds), 0600."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    path.chmod(0o600)


def same_key(one: PrivateKey, other: PrivateKey) -> bool:
    der = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    return one.private_bytes(*der, plain) == other.private_bytes(*der, plain)


def test_first_start_generates_an_encrypted_es256_key(app, client) -> None:  # type: ignore[no-untyped-def]
    keys_dir = app.extensions["sts"].settings.keys_dir
    files = key_files(keys_dir)
    assert len(files) == 1
    assert os.stat(files[0]).st_mode & 0o777 == 0o600
    version, kdf, log2_n, r, p, _salt, _nonce = file_header(files[0])
    # scrypt, not PBKDF2, at the configured cost (the tests' STS_KEY_FILE_SCRYPT_LOG2_N)
    assert (version, kdf, log2_n, r, p) == (2, 1, TEST_SCRYPT_LOG2_N, 8, 1)
    assert FileKeyStore(keys_dir, TEST_PASSPHRASE).load(files[0].stem, None) is not None

    (published,) = client.get("/jwks.json").json["keys"]
    assert published["alg"] == "ES256"
    assert published["crv"] == "P-256"
    assert published["use"] == "sig"
    assert published["kid"] == rfc7638_thumbprint(published)
    assert files[0].name == f"{published['kid']}.pem"
    assert "d" not in published  # never the private part


def test_a_new_key_file_is_scrypt_and_aes_gcm_not_pkcs8_pbes2(tmp_path: Path) -> None:
    """Version 2: the scrypt cost and a random salt are recorded in the file; no PKCS#8
    PBES2 (PBKDF2 with 2048 rounds) for a passphrase-guessing attacker to run offline."""
    private_key = generate_private_key("ES256")
    kid = thumbprint(private_key)
    FileKeyStore(tmp_path / "one", TEST_PASSPHRASE).store(kid, private_key)
    FileKeyStore(tmp_path / "two", TEST_PASSPHRASE).store(kid, private_key)
    one, two = tmp_path / "one" / f"{kid}.pem", tmp_path / "two" / f"{kid}.pem"
    assert os.stat(one).st_mode & 0o777 == 0o600
    assert not one.read_bytes().startswith(PKCS8_PBES2)
    with pytest.raises(ValueError):  # not PKCS#8 at all, whatever the passphrase
        serialization.load_pem_private_key(one.read_bytes(), TEST_PASSPHRASE.encode())
    version, kdf, log2_n, r, p, salt, nonce = file_header(one)
    assert (version, kdf, log2_n, r, p) == (2, 1, 17, 8, 1)  # N = 2**17: 128 MiB
    assert len(salt) == 16 and len(nonce) == 12
    assert file_header(two)[5] != salt  # another keystore (process): another salt
    # One keystore derives once per salt: its next key (a rotation) reuses the salt, not
    # the nonce.
    store = FileKeyStore(tmp_path / "three", TEST_PASSPHRASE)
    first, second = generate_private_key("ES256"), generate_private_key("ES256")
    store.store(thumbprint(first), first)
    store.store(thumbprint(second), second)
    first_header = file_header(tmp_path / "three" / f"{thumbprint(first)}.pem")
    second_header = file_header(tmp_path / "three" / f"{thumbprint(second)}.pem")
    assert first_header[5] == second_header[5] and first_header[6] != second_header[6]
    assert first_header[5] not in (salt, file_header(two)[5])


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_file_keystore_round_trip(tmp_path: Path, alg: str) -> None:
    private_key = generate_private_key(alg)
    kid = thumbprint(private_key)
    FileKeyStore(tmp_path, TEST_PASSPHRASE).store(kid, private_key)
    assert file_header(tmp_path / f"{kid}.pem")[0] == 2
    loaded = FileKeyStore(tmp_path, TEST_PASSPHRASE).load(kid, None)  # a fresh process
    assert same_key(loaded, private_key)


def test_file_keystore_refuses_a_wrong_passphrase(tmp_path: Path) -> None:
    private_key = generate_private_key("ES256")
    kid = thumbprint(private_key)
    FileKeyStore(tmp_path, TEST_PASSPHRASE).store(kid, private_key)
    assert file_header(tmp_path / f"{kid}.pem")[0] == 2
    with pytest.raises(StartupError) as caught:
        FileKeyStore(tmp_path, "not the right passphrase").load(kid, None)
    assert str(caught.value) == (
        f"STS_KEY_PASSPHRASE does not decrypt {tmp_path / kid}.pem: wrong passphrase, "
        "or the file is damaged or holds another kid's key"
    )


def test_a_key_file_copied_under_another_kid_does_not_decrypt(tmp_path: Path) -> None:
    """The kid is associated data: one key's file renamed to another's kid is refused by
    the keystore itself, before any thumbprint check."""
    store = FileKeyStore(tmp_path, TEST_PASSPHRASE)
    first, second = generate_private_key("ES256"), generate_private_key("ES256")
    store.store(thumbprint(first), first)
    store.store(thumbprint(second), second)
    shutil.copyfile(tmp_path / f"{thumbprint(first)}.pem", tmp_path / f"{thumbprint(second)}.pem")
    with pytest.raises(StartupError, match="or holds another kid's key"):
        FileKeyStore(tmp_path, TEST_PASSPHRASE).load(thumbprint(second), None)


def test_a_key_file_cannot_ask_for_an_unbounded_scrypt_cost(tmp_path: Path) -> None:
    """The cost is read from the file, so it is bounded before anything is derived."""
    private_key = generate_private_key("ES256")
    kid = thumbprint(private_key)
    FileKeyStore(tmp_path, TEST_PASSPHRASE).store(kid, private_key)
    path = tmp_path / f"{kid}.pem"
    lines = path.read_text().strip().splitlines()
    raw = bytearray(base64.b64decode("".join(lines[1:-1])))
    raw[2] = 30  # N = 2**30: 128 GiB
    body = base64.b64encode(bytes(raw)).decode()
    path.write_text(f"{lines[0]}\n{body}\n{lines[-1]}\n")
    with pytest.raises(StartupError, match=r"not a signing key file sts can read .*N=2\*\*30"):
        FileKeyStore(tmp_path, TEST_PASSPHRASE).load(kid, None)


def test_a_key_file_in_the_old_format_still_signs(  # type: ignore[no-untyped-def]
    app, make_settings, empty_database_url, clock, caplog
) -> None:
    """A service upgraded in place keeps signing with its PKCS#8 PBES2 file, and says
    how to convert it."""
    caplog.set_level(logging.WARNING, logger="sts.keys.keystore")
    keys_dir = app.extensions["sts"].settings.keys_dir
    kid = app.extensions["sts"].keyring.signing_key().kid
    private_key = FileKeyStore(keys_dir, TEST_PASSPHRASE).load(kid, None)
    write_legacy_file(keys_dir / f"{kid}.pem", private_key, TEST_PASSPHRASE)

    upgraded = create_app(make_settings(empty_database_url), clock=clock)
    try:
        assert upgraded.extensions["sts"].keyring.signing_key().kid == kid
    finally:
        upgraded.extensions["sts"].engine.dispose()
    assert caplog.messages == [
        f"signing key {kid} is in the old key file format (PBKDF2, 2048 rounds): run "
        "`sts keys rewrap` to re-encrypt it with scrypt (see the README)"
    ]
    with pytest.raises(StartupError, match="STS_KEY_PASSPHRASE does not decrypt"):
        FileKeyStore(keys_dir, "not the right passphrase").load(kid, None)


def test_an_old_format_file_under_another_kid_is_refused(tmp_path: Path) -> None:
    """Version 1 does not bind the kid, so the keystore checks the thumbprint: a rewrap
    must not seal one key under another's kid."""
    first, second = generate_private_key("ES256"), generate_private_key("ES256")
    write_legacy_file(tmp_path / f"{thumbprint(second)}.pem", first, TEST_PASSPHRASE)
    with pytest.raises(StartupError, match=f"does not hold signing key {thumbprint(second)}"):
        FileKeyStore(tmp_path, TEST_PASSPHRASE).load(thumbprint(second), None)


def test_rewrap_with_the_same_passphrase_converts_old_files(  # type: ignore[no-untyped-def]
    app, make_settings, empty_database_url, clock
) -> None:
    services = app.extensions["sts"]
    keys_dir = services.settings.keys_dir
    kid = services.keyring.signing_key().kid
    private_key = FileKeyStore(keys_dir, TEST_PASSPHRASE).load(kid, None)
    path = keys_dir / f"{kid}.pem"
    write_legacy_file(path, private_key, TEST_PASSPHRASE)

    result = rewrap(services.settings, services.session_factory, "file", TEST_PASSPHRASE)
    assert (result.rewrapped, result.already_done) == ([kid], [])
    assert file_header(path)[:5] == (2, 1, TEST_SCRYPT_LOG2_N, 8, 1)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert same_key(FileKeyStore(keys_dir, TEST_PASSPHRASE).load(kid, None), private_key)
    again = create_app(make_settings(empty_database_url), clock=clock)
    assert again.extensions["sts"].keyring.signing_key().kid == kid
    again.extensions["sts"].engine.dispose()
    # Converted once: a second run finds nothing to do.
    result = rewrap(services.settings, services.session_factory, "file", TEST_PASSPHRASE)
    assert (result.rewrapped, result.already_done) == ([], [kid])


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


def test_the_generated_development_passphrase_lives_in_a_private_folder(tmp_path: Path) -> None:
    """Without STS_KEY_PASSPHRASE outside production, the passphrase sts generates is kept
    0600 in an instance folder created 0700, as the SQLite database creates it (whichever
    comes first), and `sts check` is told where (development_passphrase_file)."""
    settings = Settings(instance_dir=tmp_path / "instance", keys_dir=tmp_path / "keys")
    generated = development_passphrase_file(settings)
    assert generated == tmp_path / "instance" / "key-passphrase"
    passphrase = resolve_key_passphrase(settings)
    assert len(passphrase) >= 32 and generated.read_text().strip() == passphrase
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    assert stat.S_IMODE(generated.parent.stat().st_mode) == 0o700
    assert resolve_key_passphrase(settings) == passphrase  # read back, not generated again
    assert development_passphrase_file(settings.replace(key_passphrase="x" * 32)) is None
