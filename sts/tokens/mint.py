"""Signing an issued token: RFC 9068 §2.1 header (``typ: at+jwt``, ``kid``)."""

from __future__ import annotations

from typing import Any

from joserfc import jwt

from sts.keys.keyring import ActiveKey
from sts.tokens.jose import accepting_eddsa


def mint_access_token(claims: dict[str, Any], key: ActiveKey) -> str:
    header = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
    with accepting_eddsa(key.alg):
        return jwt.encode(header, claims, key.key, algorithms=[key.alg])
