"""Where private keys rest. One small interface, two stores:

- ``FileKeyStore`` (the single-host default): ``<keys_dir>/<kid>.pem``, mode 0600: the
  PKCS#8 key under AES-256-GCM with the kid as associated data, keyed by scrypt (RFC 7914)
  from STS_KEY_PASSPHRASE, the salt and cost recorded in the file;
- ``DatabaseKeyStore`` (several hosts, one database): the ``signing_keys.
  encrypted_private_key`` column, AES-256-GCM under STS_KEY_ENCRYPTION_KEY with the kid as
  associated data, so a blob copied onto another key's row does not decrypt.

The key ring asks a keystore to ``store`` a new key (it may return a blob for the
column), to ``load`` it back by kid, and to ``destroy`` it once the key is removed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
import struct
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sts.errors import StartupError
from sts.keys.material import PrivateKey, thumbprint
from sts.settings import MAX_SCRYPT_LOG2_N, MIN_SCRYPT_LOG2_N, Settings

log = logging.getLogger(__name__)

DEV_PASSPHRASE_FILE = "key-passphrase"


BLOB_VERSION = b"\x01"
NONCE_BYTES = 12  # NIST SP 800-38D: 96-bit random nonces


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's cost (RFC 7914 §2): N = 2**log2_n, block size r, parallelism p.
    Memory is 128 * r * N bytes (N = 2**17, r = 8: 128 MiB)."""

    log2_n: int
    r: int
    p: int

    @property
    def memory(self) -> int:
        return 128 * self.r * (1 << self.log2_n)

    def acceptable(self) -> bool:
        """What a file may ask for: at least N = 2**15, at most 1 GiB and p = 4, so a
        file cannot make start-up allocate or compute without bound."""
        return (
            MIN_SCRYPT_LOG2_N <= self.log2_n <= MAX_SCRYPT_LOG2_N
            and 1 <= self.r <= 16
            and 1 <= self.p <= 4
            and self.memory <= 2**30
        )


# OWASP's scrypt minimum (N = 2**17, r = 8, p = 1): 128 MiB and about 0.3 s per
# derivation, paid once per file salt per process (the key ring caches loaded keys).
# STS_KEY_FILE_SCRYPT_LOG2_N sets N for new files (file_keystore).
SCRYPT_COST = ScryptCost(log2_n=17, r=8, p=1)


def file_keystore(settings: Settings, passphrase: str) -> FileKeyStore:
    """The key files under ``passphrase``, new ones written at the configured cost."""
    cost = ScryptCost(settings.key_file_scrypt_log2_n, SCRYPT_COST.r, SCRYPT_COST.p)
    return FileKeyStore(settings.keys_dir, passphrase, cost)


# The key file, version 2 (version 1 is PKCS#8 PBES2: PBKDF2-SHA256 with 2048 rounds,
# cheap to brute-force offline; still read, rewritten by `sts keys rewrap`):
#   PEM "STS ENCRYPTED PRIVATE KEY" around
#   version (0x02) || kdf (0x01: scrypt) || log2(N) || r || p || salt(16) || nonce(12)
#   || AES-256-GCM(scrypt(passphrase, salt), PKCS#8 DER, aad=FILE_AAD || kid || header)
FILE_LABEL = "STS ENCRYPTED PRIVATE KEY"
FILE_VERSION = 2
KDF_SCRYPT = 1
SALT_BYTES = 16
FILE_HEADER = struct.Struct(f">BBBBB{SALT_BYTES}s{NONCE_BYTES}s")
FILE_AAD = b"sts signing key file v2:"
LEGACY_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class KeyStore(Protocol):
    name: str

    def store(
        self, kid: str, private_key: PrivateKey, *, overwrite: bool = False
    ) -> bytes | None: ...

    def load(self, kid: str, blob: bytes | None) -> PrivateKey: ...

    def destroy(self, kid: str) -> None: ...


class FileKeyStore:
    """``<keys_dir>/<kid>.pem``, mode 0600: version 2 (scrypt, AES-256-GCM bound to the
    kid) is written; version 1 (PKCS#8 PBES2) is still read."""

    name = "file"

    def __init__(self, directory: Path, passphrase: str, cost: ScryptCost = SCRYPT_COST) -> None:
        self.directory = directory
        self._passphrase = passphrase.encode()
        self._cost = cost
        # (salt, cost) -> scrypt(passphrase, salt, cost), the key-encryption key: derived
        # once per salt by this keystore. A key it writes reuses a salt already derived
        # (of a file it wrote or loaded), so a rotation step, run by the key-ring refresh
        # on a request, costs no derivation; each file still has its own random nonce.
        # Holds nothing the passphrase held here does not already give.
        self._keks: dict[tuple[bytes, ScryptCost], bytes] = {}

    def path_for(self, kid: str) -> Path:
        return self.directory / f"{kid}.pem"

    def store(self, kid: str, private_key: PrivateKey, *, overwrite: bool = False) -> bytes | None:
        """Write the key; ``overwrite`` (rewrap only) replaces the file atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        pem = self._seal(kid, private_key)
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

    def in_legacy_format(self, kid: str) -> bool:
        """The file is version 1 (PKCS#8 PBES2): `sts keys rewrap` rewrites it."""
        with self.path_for(kid).open("rb") as handle:
            return handle.read(len(LEGACY_PEM)) == LEGACY_PEM

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
        data = path.read_bytes()
        if data.startswith(LEGACY_PEM):
            return self._load_legacy(kid, path, data)
        der = self._open(kid, path, data)
        return serialization.load_der_private_key(der, None)  # type: ignore[return-value]

    def _seal(self, kid: str, private_key: PrivateKey) -> bytes:
        der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        salt = self._write_salt()
        cost = self._cost
        header = FILE_HEADER.pack(
            FILE_VERSION,
            KDF_SCRYPT,
            cost.log2_n,
            cost.r,
            cost.p,
            salt,
            secrets.token_bytes(NONCE_BYTES),
        )
        nonce = header[-NONCE_BYTES:]
        sealed = AESGCM(self._kek(salt, cost)).encrypt(nonce, der, file_aad(kid, header))
        return armor(header + sealed)

    def _open(self, kid: str, path: Path, data: bytes) -> bytes:
        raw = unarmor(data)
        if raw is None or len(raw) <= FILE_HEADER.size:
            raise StartupError(f"{path} is not a signing key file sts can read")
        header = raw[: FILE_HEADER.size]
        version, kdf, log2_n, r, p, salt, nonce = FILE_HEADER.unpack(header)
        cost = ScryptCost(log2_n, r, p)
        if version != FILE_VERSION or kdf != KDF_SCRYPT or not cost.acceptable():
            raise StartupError(
                f"{path} is not a signing key file sts can read (version {version}, "
                f"kdf {kdf}, scrypt N=2**{log2_n} r={r} p={p})"
            )
        try:
            return AESGCM(self._kek(salt, cost)).decrypt(
                nonce, raw[FILE_HEADER.size :], file_aad(kid, header)
            )
        except InvalidTag:
            raise StartupError(
                f"STS_KEY_PASSPHRASE does not decrypt {path}: wrong passphrase, "
                "or the file is damaged or holds another kid's key"
            ) from None

    def _load_legacy(self, kid: str, path: Path, data: bytes) -> PrivateKey:
        try:
            key = serialization.load_pem_private_key(data, self._passphrase)
        except (ValueError, TypeError):
            raise StartupError(
                f"STS_KEY_PASSPHRASE does not decrypt {path}: wrong passphrase, "
                "or the file is damaged"
            ) from None
        # Version 1 does not bind the kid; check it here, before a rewrap binds it.
        if not isinstance(key, PrivateKey) or thumbprint(key) != kid:
            raise StartupError(f"{path} does not hold signing key {kid}")
        log.warning(
            "signing key %s is in the old key file format (PBKDF2, 2048 rounds): run "
            "`sts keys rewrap` to re-encrypt it with scrypt (see the README)",
            kid,
        )
        return key

    def _write_salt(self) -> bytes:
        for salt, cost in reversed(list(self._keks)):
            if cost == self._cost:
                return salt
        return secrets.token_bytes(SALT_BYTES)

    def _kek(self, salt: bytes, cost: ScryptCost) -> bytes:
        """RFC 7914 scrypt: a 256-bit key-encryption key from the passphrase."""
        kek = self._keks.get((salt, cost))
        if kek is None:
            kdf = Scrypt(salt=salt, length=32, n=2**cost.log2_n, r=cost.r, p=cost.p)
            kek = kdf.derive(self._passphrase)
            self._keks[(salt, cost)] = kek
        return kek


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


def file_aad(kid: str, header: bytes) -> bytes:
    # Binds the ciphertext to its kid (a file copied under another kid's name fails
    # authentication) and to its header (the cost and salt as written).
    return FILE_AAD + kid.encode() + b"\x00" + header


def armor(raw: bytes) -> bytes:
    """RFC 7468 textual encoding: base64 in lines of 64 between BEGIN and END lines."""
    body = "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 64))
    return f"-----BEGIN {FILE_LABEL}-----\n{body}\n-----END {FILE_LABEL}-----\n".encode()


def unarmor(data: bytes) -> bytes | None:
    lines = data.decode("ascii", errors="replace").strip().splitlines()
    if len(lines) < 3 or lines[0] != f"-----BEGIN {FILE_LABEL}-----":
        return None
    if lines[-1] != f"-----END {FILE_LABEL}-----":
        return None
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None


def development_passphrase_file(settings: Settings) -> Path | None:
    """Where the generated development passphrase is kept when it is the one the file
    keystore uses (no STS_KEY_PASSPHRASE, not in production); None otherwise."""
    if settings.key_passphrase or settings.is_production:
        return None
    return settings.instance_dir / DEV_PASSPHRASE_FILE


def resolve_key_passphrase(settings: Settings) -> str:
    """The configured passphrase; in development only, a generated one kept under the
    instance folder (mode 0600) so the embedded default still encrypts keys at rest."""
    if settings.key_passphrase:
        return settings.key_passphrase
    path = development_passphrase_file(settings)
    if path is None:  # production: validate() already refuses this; belt and braces
        raise StartupError("STS_KEY_PASSPHRASE is required in production")
    if not path.exists():
        # 0700, as sts.db.engine creates it for the SQLite database: whichever comes first.
        settings.instance_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
            legacy = file_keystore(settings, settings.key_passphrase)
        return DatabaseKeyStore(kek, legacy)
    return file_keystore(settings, resolve_key_passphrase(settings))
