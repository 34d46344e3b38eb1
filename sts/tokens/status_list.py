"""Token Status List (draft-ietf-oauth-status-list), the pure parts.

A status list is a byte array of one-bit statuses (0 VALID, 1 INVALID); it is published
compressed with DEFLATE in the ZLIB format and base64url-encoded, inside a JWT signed
by sts (``typ: statuslist+jwt``). Every issued token points at its entry with
``{"status": {"status_list": {"idx": N, "uri": URI}}}``.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from joserfc import jwt

from sts.endpoints.metadata import STATUS_LIST_PATH
from sts.keys.keyring import ActiveKey

STATUS_LIST_TYP = "statuslist+jwt"
STATUS_LIST_MEDIA_TYPE = "application/statuslist+jwt"

BITS = 1  # VALID (0) or INVALID (1): revocation only, no suspension


def status_list_uri(issuer: str, list_id: int) -> str:
    return f"{issuer}{STATUS_LIST_PATH}/{list_id}"


def status_claim(uri: str, idx: int) -> dict[str, Any]:
    """The referenced token's ``status`` claim."""
    return {"status_list": {"idx": idx, "uri": uri}}


def encode_status_list(size: int, invalid: Iterable[int]) -> str:
    """``lst``: the bit of index i is bit (i % 8) of byte (i // 8), counting from the
    least significant bit; then ZLIB-compressed (highest level) and base64url, unpadded."""
    statuses = bytearray(size // 8)
    for idx in invalid:
        statuses[idx // 8] |= 1 << (idx % 8)
    compressed = zlib.compress(bytes(statuses), level=9)
    return base64.urlsafe_b64encode(compressed).rstrip(b"=").decode()


def build_status_list_claims(
    *, uri: str, size: int, invalid: Iterable[int], now: datetime, ttl: int, lifetime: int
) -> dict[str, Any]:
    """The status list token's claims: ``sub`` is the URI the referenced tokens name."""
    issued_at = int(now.timestamp())
    return {
        "sub": uri,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "ttl": ttl,
        "status_list": {"bits": BITS, "lst": encode_status_list(size, invalid)},
    }


def mint_status_list_token(claims: dict[str, Any], key: ActiveKey, issuer: str) -> str:
    header = {"alg": key.alg, "kid": key.kid, "typ": STATUS_LIST_TYP}
    return jwt.encode(header, {"iss": issuer, **claims}, key.key, algorithms=[key.alg])
