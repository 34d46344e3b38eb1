"""RFC 7662 token introspection that re-checks, for registered resource servers.

The answer starts as ``{"active": false}`` and returns early on every failed check, so
a check that is forgotten or fails unexpectedly leaves the token inactive:
signature and times, the signing key (published and not revoked), the token's own
lineage row (known, not revoked, no revoked ancestor along either edge: a token it was
exchanged from or the one its actor presented, RFC 8693 §4.1), and the policy as it is
NOW (the rule that allowed it still exists and still grants its audiences and scopes).
A resource server registered with ``introspects`` is told only about tokens for one of
those audiences (RFC 7662 §2.2, §4); any other is inactive to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sts import errors
from sts.db import queries
from sts.db.locks import write_transaction
from sts.endpoints import NO_STORE, Response
from sts.endpoints.client_authentication import (
    authenticate_required_client,
    record_assertion_once,
)
from sts.endpoints.metadata import INTROSPECTION_PATH
from sts.policy.evaluate import withdrawn
from sts.protocol.token_request import parse_token_request
from sts.services import Services
from sts.tokens.dpop import dpop_key
from sts.trust import ClientConfig

log = logging.getLogger(__name__)

# RFC 7662 §2.2: the members an active answer carries (when the token has them).
# RFC 9449 §6.2: ``cnf`` too, so that a resource server learns the key a DPoP-bound token
# must be presented with.
ACTIVE_MEMBERS = (
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "nbf",
    "jti",
    "act",
    "cnf",
)


def handle_introspection(
    services: Services,
    *,
    content_type: str,
    form: Sequence[tuple[str, str]],
    authorization: str | None,
) -> Response:
    now = services.clock()
    request = parse_token_request(content_type, form)
    client = authenticate_required_client(
        services, request.client, authorization, INTROSPECTION_PATH, now
    )
    if client.assertion_jti is not None:
        # RFC 7523 §3: spent once authenticated, whatever the answer below, so that a
        # captured assertion refused here cannot be used again anywhere.
        with write_transaction(services.session_factory) as session:
            record_assertion_once(session, client)
    # RFC 7662 §2.1: "the endpoint MUST also require some form of authorization to access
    # this endpoint"; §4: only resource servers may learn about tokens.
    registered = services.trust.current().clients.get(client.client_id or "")
    if registered is None or not registered.is_resource_server:
        raise errors.InvalidClient(reason="introspection.not_resource_server")
    return Response(200, inspect_token(services, request.token, now, registered), dict(NO_STORE))


def inspect_token(
    services: Services, token: str, now: datetime, caller: ClientConfig
) -> dict[str, Any]:
    inactive: dict[str, Any] = {"active": False}
    try:
        # RFC 7662 §2.2: a token that "does not exist on this server" is inactive, so only
        # sts's own tokens are verified: a trusted issuer's is refused without fetching its
        # keys (a failed fetch would answer 503, telling the caller the issuer is down).
        verified = services.verify_own_token(token, role="introspected", now=now)
    except errors.InvalidRequest as refusal:
        # Bad signature, expired, unknown or unpublished kid, malformed, ...
        log.info("introspection: inactive (%s)", refusal.reason)
        return inactive
    if verified.kind != "sts":
        return inactive  # only this STS's own tokens are described
    jti = verified.token_id
    if not serves_audience(caller, verified.claims.get("aud")):
        # RFC 7662 §2.2: a token "the protected resource is not allowed to introspect"
        # MUST be answered {"active": false}, exactly as any inactive token (no oracle);
        # §4: a resource server learns nothing of tokens meant for other services.
        log.info(
            "introspection: jti=%s inactive: introspection.audience_not_served (client %s)",
            jti,
            caller.client_id,
        )
        return inactive
    with services.session_factory() as session:
        if queries.key_is_revoked(session, str(verified.header.get("kid"))):
            log.info("introspection: jti=%s inactive: signing key revoked", jti)
            return inactive
        row = queries.issued_token(session, jti)
        if row is None or row.revoked_at is not None:
            log.info("introspection: jti=%s inactive: unknown or revoked", jti)
            return inactive
        if queries.revoked_in_ancestry(session, jti):
            log.info("introspection: jti=%s inactive: an ancestor is revoked", jti)
            return inactive
        rule_id, audiences, scopes = row.rule_id, tuple(row.audience), tuple(row.scope.split())
    bound = dpop_key(verified.claims) is not None
    rules = services.trust.current().rules
    reason = withdrawn(rules, rule_id, audiences, scopes, bound=bound)
    if reason is not None:
        log.info("introspection: jti=%s inactive: no longer granted (%s)", jti, reason)
        return inactive
    claims = verified.claims
    active: dict[str, Any] = {"active": True}
    active.update({name: claims[name] for name in ACTIVE_MEMBERS if name in claims})
    active["token_type"] = "DPoP" if bound else "Bearer"  # RFC 9449 §6.2
    return active


def serves_audience(caller: ClientConfig, aud: Any) -> bool:
    """May ``caller`` introspect a token whose ``aud`` is ``aud`` (a string or a list,
    RFC 7519 §4.1.3)? A resource server registered without ``introspects`` may introspect
    every token (as before it existed); one registered with it, only a token sharing an
    audience with it, exactly. A token with no audience shares none."""
    if caller.introspects is None:
        return True
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return any(isinstance(a, str) and a in caller.introspects for a in audiences)
