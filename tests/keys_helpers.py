"""Signing and verifying in tests the way a verifier would (joserfc, explicit algorithms)."""

from __future__ import annotations

import json
import warnings
from typing import Any

from joserfc import jwk, jwt
from joserfc.errors import SecurityWarning

from sts.keys.keyring import ActiveKey

# Short schedule for clock-driven tests: active 1 h, published 10 min ahead, kept 20 min
# after retirement (≥ 900 s token lifetime + 30 s leeway), replicas at most 45 s behind.
# The derived JWKS max-age is 300 s.
ROTATION = {
    "key_active_period": 3600,
    "key_publish_lead_time": 600,
    "key_retention": 1200,
    "key_refresh_interval": 45.0,
}


def sign(active: ActiveKey, claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():
        # joserfc flags "EdDSA" as deprecated by RFC 9864 (in favour of "Ed25519"); sts
        # still publishes "EdDSA", which is what deployed verifiers (PyJWT, ...) accept.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(
            {"alg": active.alg, "kid": active.kid, "typ": "JWT"},
            claims,
            active.key,
            algorithms=[active.alg],
        )


def verify(token: str, jwks: dict[str, Any], alg: str) -> dict[str, Any]:
    key_set = jwk.KeySet.import_key_set(json.loads(json.dumps(jwks)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return dict(jwt.decode(token, key_set, algorithms=[alg]).claims)


def kids(jwks: dict[str, Any]) -> set[str]:
    return {key["kid"] for key in jwks["keys"]}
