"""How the lineage names an upstream token (pure): its ``jti``, else its fingerprint."""

from __future__ import annotations

import json

from joserfc import jws
from joserfc.util import to_bytes

from sts.tokens.jose import MALFORMED_JWS
from sts.tokens.verify import token_fingerprint


def upstream_token_names(token: str) -> tuple[str, str | None, str | None]:
    """The id an exchange recorded for this upstream token (``issued_tokens.
    subject_token_id``, ``actor_token_id``), its ``sub`` and its ``iss`` (None where it
    has none). Unverified on purpose: a leaked token is looked up, not trusted."""
    try:
        payload = json.loads(jws.extract_compact(to_bytes(token)).payload)
    except MALFORMED_JWS:
        return token_fingerprint(token), None, None
    if not isinstance(payload, dict):
        return token_fingerprint(token), None, None
    jti, sub, iss = payload.get("jti"), payload.get("sub"), payload.get("iss")
    token_id = jti if isinstance(jti, str) and jti else token_fingerprint(token)
    return (
        token_id,
        sub if isinstance(sub, str) else None,
        iss if isinstance(iss, str) else None,
    )
