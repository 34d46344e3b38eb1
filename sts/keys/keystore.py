"""Where private keys rest. One small interface, two stores:

- ``FileKeyStore`` (the single-host default): ``<keys_dir>/<kid>.pem``, PKCS#8 encrypted
  with STS_KEY_PASSPHRASE, mode 0600;
- ``DatabaseKeyStore`` (several hosts, one database): the ``signing_keys.
  encrypted_private_key`` column, AES-256-GCM under STS_KEY_ENCRYPTION_KEY with the kid as
  associated data, so a blob copied onto another key's row does not decrypt.

The key ring asks a keystore to ``store`` a new key (it may return a blob for the
column), to ``load`` it back by kid, and to ``destroy`` it once the key is removed.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sts.errors import StartupError
from sts.keys.material import PrivateKey
from sts.settings import Settings

log = logging.getLogger(__name__)

DEV_PASSPHRASE_FILE = "key-passphrase"


BLOB_VERSION = b"\x01"
NONCE_BYTES = 12  # NIST SP 800-38D: 96-bit random nonces


class KeyStore(Protocol):
    name: str

    def store(
        self, kid: str, private_key: PrivateKey, *, overwrite: bool = False
    ) -> bytes | None: ...

    def load(self, kid: str, blob: bytes | None) -> PrivateKey: ...

    def destroy(self, kid: str) -> None: ...


class FileKeyStore:
    """``<keys_dir>/<kid>.pem``: PKCS#8, encrypted with the passphrase, mode 0600."""

    name = "file"

    def __init__(self, directory: Path, passphrase: str) -> None:
        self.directory = directory
        self._passphrase = passphrase.encode()

    def path_for(self, kid: str) -> Path:
        return self.directory / f"{kid}.pem"

    def store(self, kid: str, private_key: PrivateKey, *, overwrite: bool = False) -> bytes | None:
        """Write the key; ``overwrite`` (rewrap only) replaces the file atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        path = self.path_for(kid)
        target = path.with_suffix(".pem.new") if overwrite else path
        if overwrite:
            target.unlink(missing_ok=True)  # left over from an interrupted rewrap
        try:
            # O_EXCL: two keys with one kid is a bug (or an attack), never an overwrite.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise StartupError(f"duplicate kid {kid}: {target} already exists") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(target, path)  # readers see the old file or the new one, never half
        return None

    def destroy(self, kid: str) -> None:
        self.path_for(kid).unlink(missing_ok=True)

    def holds(self, kid: str) -> bool:
        return self.path_for(kid).exists()

    def load(self, kid: str, blob: bytes | None) -> PrivateKey:
        path = self.path_for(kid)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise StartupError(
                f"signing key {kid} is missing from the keystore: {path} does not exist "
                "(check STS_KEYS_DIR)"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StartupError(
                f"refusing to load {path}: it is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), self._passphrase)
        except (ValueError, TypeError):
            raise StartupError(
                f"STS_KEY_PASSPHRASE does not decrypt {path}: wrong passphrase, "
                "or the file is damaged"
            ) from None
        return key  # type: ignore[return-value]


class DatabaseKeyStore:
    """The private key as a blob in ``signing_keys.encrypted_private_key``:
    ``0x01 || nonce(12) || AES-256-GCM(KEK, PKCS#8 DER, aad=kid)``.

    ``legacy_files`` reads keys still in the file keystore (rows without a blob) while an
    installation moves from files to the database (see the runbook).
    """

    name = "database"

    def __init__(self, kek: bytes, legacy_files: FileKeyStore | None = None) -> None:
        self._aead = AESGCM(kek)
        self._legacy_files = legacy_files

    def store(self, kid: str, private_key: PrivateKey, *, overwrite: bool = False) -> bytes | None:
        der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = secrets.token_bytes(NONCE_BYTES)
        return BLOB_VERSION + nonce + self._aead.encrypt(nonce, der, associated_data(kid))

    def load(self, kid: str, blob: bytes | None) -> PrivateKey:
        if blob is None:
            if self._legacy_files is not None:
                return self._legacy_files.load(kid, None)
            raise StartupError(
                f"signing key {kid} has no private key in the database (it is in the file "
                "keystore): run `sts keys rewrap --to database`, see the key rotation runbook"
            )
        if not blob.startswith(BLOB_VERSION) or len(blob) <= 1 + NONCE_BYTES:
            raise StartupError(f"signing key {kid}: unknown encrypted key format in the database")
        nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            der = self._aead.decrypt(nonce, ciphertext, associated_data(kid))
        except InvalidTag:
            raise StartupError(
                f"STS_KEY_ENCRYPTION_KEY does not decrypt signing key {kid}: wrong "
                "key-encryption key, or the row is damaged"
            ) from None
        return serialization.load_der_private_key(der, None)  # type: ignore[return-value]

    def destroy(self, kid: str) -> None:
        """Nothing to do here: the caller clears the row's blob in its transaction."""


def associated_data(kid: str) -> bytes:
    # Binds the ciphertext to its row: a blob moved to another kid fails authentication.
    return b"sts signing key v1:" + kid.encode()


def resolve_key_passphrase(settings: Settings) -> str:
    """The configured passphrase; in development only, a generated one kept under the
    instance folder (mode 0600) so the embedded default still encrypts keys at rest."""
    if settings.key_passphrase:
        return settings.key_passphrase
    if settings.is_production:  # validate() already refuses this; belt and braces
        raise StartupError("STS_KEY_PASSPHRASE is required in production")
    path = settings.instance_dir / DEV_PASSPHRASE_FILE
    if not path.exists():
        settings.instance_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
            log.warning(
                "generated a development key passphrase in %s; set STS_KEY_PASSPHRASE "
                "in production",
                path,
            )
    return path.read_text().strip()


def make_keystore(settings: Settings) -> KeyStore:
    """The keystore STS_KEYSTORE names, with the secret it needs."""
    if settings.keystore == "database":
        kek = settings.key_encryption_key_bytes
        if kek is None:  # validate() already refuses this
            raise StartupError("STS_KEY_ENCRYPTION_KEY is required with STS_KEYSTORE=database")
        legacy = None
        if settings.key_passphrase:
            legacy = FileKeyStore(settings.keys_dir, settings.key_passphrase)
        return DatabaseKeyStore(kek, legacy)
    return FileKeyStore(settings.keys_dir, resolve_key_passphrase(settings))
