"""Where private keys rest. One small interface; the file store is the single-host default.

The key ring asks a keystore to ``store`` a new key (it may return a blob for the
``signing_keys.encrypted_private_key`` column) and to ``load`` it back by kid.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from sts.errors import StartupError
from sts.keys.material import PrivateKey
from sts.settings import Settings

log = logging.getLogger(__name__)

DEV_PASSPHRASE_FILE = "key-passphrase"


class KeyStore(Protocol):
    name: str

    def store(self, kid: str, private_key: PrivateKey) -> bytes | None: ...

    def load(self, kid: str, blob: bytes | None) -> PrivateKey: ...


class FileKeyStore:
    """``<keys_dir>/<kid>.pem``: PKCS#8, encrypted with the passphrase, mode 0600."""

    name = "file"

    def __init__(self, directory: Path, passphrase: str) -> None:
        self.directory = directory
        self._passphrase = passphrase.encode()

    def path_for(self, kid: str) -> Path:
        return self.directory / f"{kid}.pem"

    def store(self, kid: str, private_key: PrivateKey) -> bytes | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        path = self.path_for(kid)
        try:
            # O_EXCL: two keys with one kid is a bug (or an attack), never an overwrite.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise StartupError(f"duplicate kid {kid}: {path} already exists") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return None

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
    return FileKeyStore(settings.keys_dir, resolve_key_passphrase(settings))
