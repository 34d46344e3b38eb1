"""RFC 7009 token revocation, reaching every token derived from the revoked one.

1. parse the request once; 2. authenticate the client (required);
3. find the token: an access token of this STS (verified) or a service credential, in
   the order ``token_type_hint`` suggests (§2.1: the search extends to every type);
   (verification and any issuer key fetch happen before the transaction);
4. in ONE transaction: check it was issued to this client, revoke it and its lineage
   (a credential is disabled too), and audit; 5. answer 200.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from sts import errors
from sts.credentials import looks_like_api_key, parse_api_key, secret_matches
from sts.db import queries
from sts.db.locks import write_transaction
from sts.endpoints import NO_STORE, Response
from sts.endpoints.client_authentication import (
    authenticate_required_client,
    record_assertion_once,
)
from sts.endpoints.metadata import REVOCATION_PATH
from sts.grants.client_auth import AuthenticatedClient
from sts.protocol.token_request import parse_token_request
from sts.revocation import record_revocation, revoke_credential, revoke_token
from sts.services import Services
from sts.tokens.verify import VerifiedJwt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """What the presented token turned out to be (verified, before any transaction)."""

    kind: str  # access_token | service_credential | upstream_token (exposure reports)
    identifier: str  # the token's jti (or sha256:<hex>), or the credential's key id
    subject: str | None = None  # an upstream token's sub (verified)
    expires_at: datetime | None = None  # and its exp (verified)
    issuer: str | None = None  # and its issuer (verified)


# Each finder recognises one type of token, or answers None.
Finder = Callable[[Services, str, datetime], Found | None]


def handle_revocation(
    services: Services,
    *,
    content_type: str,
    form: Sequence[tuple[str, str]],
    authorization: str | None,
) -> Response:
    now = services.clock()
    request = parse_token_request(content_type, form)
    client = authenticate_required_client(
        services, request.client, authorization, REVOCATION_PATH, now
    )
    found = find_token(services, request.token, request.token_type_hint, now)
    if client.assertion_jti is not None:
        # RFC 7523 §3: spent in a transaction of its own, so that a refusal below (a
        # token issued to another client) cannot roll it back and leave it reusable.
        with write_transaction(services.session_factory) as session:
            record_assertion_once(session, client)
    with write_transaction(services.session_factory) as session:
        if found is not None and found.kind == "access_token":
            revoke_access_token(session, found.identifier, client, now)
        elif found is not None:
            revoke_presented_credential(session, found.identifier, request.token, client, now)
    # RFC 7009 §2.2: 200 whether or not the token was valid, known or already revoked
    # ("invalid tokens do not cause an error response").
    return Response(200, {}, dict(NO_STORE))


def find_token(services: Services, token: str, hint: str | None, now: datetime) -> Found | None:
    """RFC 7009 §2.1: look first where the hint points; if the token is not found there,
    "extend its search across all of its supported token types". Unknown hints are
    ignored."""
    for kind in sorted(FINDERS, key=lambda kind: kind != hint):
        found = FINDERS[kind](services, token, now)
        if found is not None:
            return found
    return None


def verified_jwt(
    services: Services, token: str, role: str, now: datetime, *, own_only: bool = False
) -> VerifiedJwt | None:
    """The token verified as a JWT of this STS or (unless ``own_only``) of a trusted
    issuer (signature, issuer, audience, expiry), or None: not one, and the reason logged,
    never the token."""
    verify = services.verify_own_token if own_only else services.verify_jwt
    try:
        return verify(token, role=role, now=now)
    except errors.InvalidRequest as refusal:
        log.info("%s token not accepted (%s)", role, refusal.reason)
        return None


def find_access_token(services: Services, token: str, now: datetime) -> Found | None:
    if looks_like_api_key(token):
        return None
    # RFC 7009 §2.2: a token sts did not issue is answered 200 like any invalid one; its
    # issuer's keys are not fetched for it (a failed fetch would be a 503).
    verified = verified_jwt(services, token, "revoked", now, own_only=True)
    if verified is None or verified.kind != "sts":
        return None  # not valid, or another issuer's token: nothing of ours to revoke
    return Found("access_token", verified.token_id)


def find_service_credential(services: Services, token: str, now: datetime) -> Found | None:
    key_id = parse_api_key(token)
    return Found("service_credential", key_id) if key_id is not None else None


FINDERS: dict[str, Finder] = {
    "access_token": find_access_token,
    "service_credential": find_service_credential,
}


def revoke_access_token(
    session: Session, jti: str, client: AuthenticatedClient, now: datetime
) -> None:
    row = queries.issued_token(session, jti)
    if row is None:
        return
    # RFC 7009 §2.1: the server "verifies whether the token was issued to the client
    # making the revocation request. If this validation fails, the request is refused".
    if row.client_id != client.client_id:
        raise errors.UnauthorizedClient(
            "The token was not issued to this client.",
            reason="revocation.other_client",
            detail=f"jti={row.jti}",
        )
    count = revoke_token(session, row.jti, now)
    record_revocation(
        session,
        now=now,
        reason="revocation.access_token",
        detail=f"revoked {count} token(s) in the lineage of jti={row.jti}",
        client_id=client.client_id,
        token_id=row.jti,
    )
    log.info("revoked jti=%s and its lineage (%d) for client=%s", row.jti, count, client.client_id)


def revoke_presented_credential(
    session: Session, key_id: str, token: str, client: AuthenticatedClient, now: datetime
) -> None:
    credential = queries.credential_by_key_id(session, key_id)
    if credential is None or not secret_matches(token, credential.secret_hash):
        return
    # Whoever presents a service credential holds it: revoking a leaked key must be
    # possible for any authenticated client (the key is disabled, never re-enabled here).
    count = revoke_credential(session, credential, now)
    record_revocation(
        session,
        now=now,
        reason="revocation.service_credential",
        detail=f"credential {credential.name!r} disabled; revoked {count} token(s)",
        client_id=client.client_id,
        token_id="credential:" + credential.name,
    )
    log.info("disabled credential %s, revoked %d token(s)", credential.name, count)
