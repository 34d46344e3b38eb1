"""RFC 7517 JSON Web Key Set: every published key (pending, active, retired)."""

from __future__ import annotations

from sts.endpoints import Response
from sts.keys.keyring import KeyRing


def render_jwks(keyring: KeyRing, max_age: int) -> Response:
    # Verifiers cache this document for max_age; rotation pre-publishes keys for at least
    # that long before they sign (see the key rotation runbook in the README).
    return Response(200, keyring.jwks(), {"Cache-Control": f"public, max-age={max_age}"})
