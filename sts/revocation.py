"""Revocation that reaches every derived token, and blocks on identities.

Revoking a token revokes every token exchanged from it, transitively (the lineage in
``issued_tokens.parent_jti``), in the caller's transaction. A block (a ``revocations``
row naming a subject, client, credential, issuer or actor) refuses new exchanges for
that identity until it is lifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from sts import errors
from sts.audit import AuditEntry, record
from sts.db import queries
from sts.db.models import ServiceCredential
from sts.policy.evaluate import TokenFacts

EVENT_REVOCATION = "token_revocation"
IDENTITY_KINDS = ("subject", "client", "credential", "issuer", "actor")


def revoke_token(session: Session, jti: str, now: datetime) -> int:
    """Revoke one token and everything exchanged from it; how many were newly revoked."""
    return queries.revoke_lineage(session, queries.tokens_named("jti", jti), now)


def revoke_credential(session: Session, credential: ServiceCredential, now: datetime) -> int:
    """Disable a service credential and revoke every token derived from it."""
    queries.set_credential_disabled(session, credential.id, True, now)
    return queries.revoke_lineage(session, queries.tokens_named("credential", credential.id), now)


def identities_of(
    client_id: str | None, subject: TokenFacts, actor: TokenFacts | None
) -> list[tuple[str, str]]:
    """The (kind, value) identities an exchange involves, as blocks name them."""
    identities = [("subject", subject.subject), ("issuer", subject.issuer)]
    if client_id is not None:
        identities.append(("client", client_id))
    if subject.source == "credential":
        identities.append(("credential", subject.source_name))
    if actor is not None:
        identities += [("actor", actor.subject), ("issuer", actor.issuer)]
        if actor.source == "credential":
            identities.append(("credential", actor.source_name))
    return identities


def refuse_blocked_identities(
    session: Session, client_id: str | None, subject: TokenFacts, actor: TokenFacts | None
) -> None:
    """Inside the exchange's transaction: one indexed query for blocks on any identity
    the exchange involves. An offboarded identity gets no new token."""
    blocked = queries.active_blocks(session, identities_of(client_id, subject, actor))
    if not blocked:
        return
    kind = blocked[0]
    if kind == "client":
        raise errors.UnauthorizedClient(
            "This client may not exchange tokens.", reason="blocked.client"
        )
    raise errors.InvalidRequest("The subject or actor has been revoked.", reason=f"blocked.{kind}")


def record_revocation(
    session: Session,
    *,
    now: datetime,
    reason: str,
    detail: str,
    client_id: str | None = None,
    token_id: str | None = None,
    decision: str = "allow",
) -> None:
    """One audit record per revocation decision (tokens named by jti, never the token)."""
    entry = AuditEntry(at=now, event=EVENT_REVOCATION, decision=decision, reason=reason)
    entry.client_id, entry.subject_token_id, entry.detail = client_id, token_id, detail
    record(session, entry)


def lift_identity_blocks(session: Session, kind: str, value: str, now: datetime) -> int:
    return queries.lift_blocks(session, kind, value, now)


def block_identity(session: Session, kind: str, value: str, reason: str, now: datetime) -> None:
    if kind not in IDENTITY_KINDS:
        raise ValueError(f"not an identity kind: {kind}")
    if not queries.active_blocks(session, [(kind, value)]):
        queries.add_block(session, kind, value, reason, now)


def describe(selectors: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{kind}={value!r}" for kind, value in selectors)
