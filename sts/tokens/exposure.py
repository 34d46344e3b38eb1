"""How the lineage names an upstream token (pure): its ``jti``, else its fingerprint."""

from __future__ import annotations

import json

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.util import to_bytes

from sts.tokens.verify import token_fingerprint


def upstream_token_id(token: str) -> str:
    """The id an exchange recorded for this subject token (``issued_tokens.
    subject_token_id``). Unverified on purpose: a leaked token is looked up, not trusted."""
    try:
        payload = json.loads(jws.extract_compact(to_bytes(token)).payload)
    except (JoseError, ValueError, UnicodeDecodeError):
        return token_fingerprint(token)
    jti = payload.get("jti") if isinstance(payload, dict) else None
    return jti if isinstance(jti, str) and jti else token_fingerprint(token)
