"""Opaque secrets: service credentials (API keys) and client secrets.

Both are generated with at least 190 bits of entropy, so a fast SHA-256 hash is the right
storage (as for GitHub tokens): a slow password hash would only add latency to every
exchange. Only hashes are stored; comparisons are constant time.

API keys look like ``stsk_<key id: 12><secret: 32><checksum: 6>`` (base62). The prefix
lets secret scanners recognise a leaked key; the CRC-32 checksum lets them (and sts)
reject a typo or a random string without a database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

API_KEY_PREFIX = "stsk_"
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62
_KEY_ID_LEN, _SECRET_LEN, _CHECKSUM_LEN = 12, 32, 6
API_KEY_LENGTH = len(API_KEY_PREFIX) + _KEY_ID_LEN + _SECRET_LEN + _CHECKSUM_LEN
HASH_PREFIX = "sha256:"
MIN_CLIENT_SECRET_LENGTH = 24


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once, never stored
    key_id: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    return HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(presented), stored_hash)


def is_secret_hash(value: str) -> bool:
    digest = value.removeprefix(HASH_PREFIX)
    return (
        value.startswith(HASH_PREFIX)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(_CHECKSUM_LEN):
        value, remainder = divmod(value, 62)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits))


def generate_api_key() -> NewApiKey:
    key_id = _random_base62(_KEY_ID_LEN)
    body = API_KEY_PREFIX + key_id + _random_base62(_SECRET_LEN)
    key = body + _checksum(body)
    return NewApiKey(key=key, key_id=key_id, secret_hash=hash_secret(key))


def parse_api_key(candidate: str) -> str | None:
    """The key id of a well-formed API key (prefix, length, alphabet, checksum), else None."""
    if len(candidate) != API_KEY_LENGTH or not candidate.startswith(API_KEY_PREFIX):
        return None
    rest = candidate[len(API_KEY_PREFIX) :]
    if any(c not in _ALPHABET for c in rest):
        return None
    body, checksum = candidate[:-_CHECKSUM_LEN], candidate[-_CHECKSUM_LEN:]
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    return rest[:_KEY_ID_LEN]


def looks_like_api_key(candidate: str) -> bool:
    return candidate.startswith(API_KEY_PREFIX)
