"""Every query sts runs lives here, so indexes can be checked against them in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from sts.db.models import (
    AuditRecord,
    Client,
    ClientAssertion,
    IssuedToken,
    Revocation,
    Rule,
    RulesState,
    ServiceCredential,
    SigningKey,
    TrustedIssuer,
)

PUBLISHED_KEY_STATES = ("pending", "active", "retired")


def ping(session: Session) -> None:
    session.execute(text("SELECT 1"))


def published_signing_keys(session: Session) -> Sequence[SigningKey]:
    """Keys that belong in JWKS (RFC 7517): pending, active and retired; oldest first."""
    return session.scalars(
        select(SigningKey)
        .where(SigningKey.state.in_(PUBLISHED_KEY_STATES))
        .order_by(SigningKey.created_at, SigningKey.kid)
    ).all()


def active_signing_key(session: Session) -> SigningKey | None:
    return session.scalars(select(SigningKey).where(SigningKey.state == "active")).first()


def all_signing_keys(session: Session) -> Sequence[SigningKey]:
    return session.scalars(select(SigningKey).order_by(SigningKey.created_at)).all()


def add_signing_key(
    session: Session,
    *,
    kid: str,
    alg: str,
    state: str,
    public_jwk: dict[str, object],
    encrypted_private_key: bytes | None,
    now: datetime,
) -> SigningKey:
    row = SigningKey(
        kid=kid,
        alg=alg,
        state=state,
        public_jwk=public_jwk,
        encrypted_private_key=encrypted_private_key,
        created_at=now,
        activated_at=now if state == "active" else None,
    )
    session.add(row)
    return row


# ---- trust configuration (rules, issuers, clients) -------------------------------------


def rules_generation(session: Session) -> int:
    return int(session.scalar(select(RulesState.generation).where(RulesState.id == 1)) or 0)


def all_rules(session: Session) -> Sequence[Rule]:
    return session.scalars(select(Rule).order_by(Rule.name)).all()


def all_trusted_issuers(session: Session) -> Sequence[TrustedIssuer]:
    return session.scalars(select(TrustedIssuer).order_by(TrustedIssuer.name)).all()


def all_clients(session: Session) -> Sequence[Client]:
    return session.scalars(select(Client).order_by(Client.client_id)).all()


# ---- the exchange's transaction --------------------------------------------------------


def credential_by_key_id(session: Session, key_id: str) -> ServiceCredential | None:
    return session.scalars(
        select(ServiceCredential).where(ServiceCredential.key_id == key_id)
    ).first()


def issued_token(session: Session, jti: str) -> IssuedToken | None:
    return session.get(IssuedToken, jti)


# Hot-path inserts: constant Core statements (compiled once, cached) with the values passed
# as parameters, on the session's connection (no ORM unit of work).
_INSERT_ASSERTION = insert(ClientAssertion)
_INSERT_ISSUED_TOKEN = insert(IssuedToken)
_INSERT_AUDIT = insert(AuditRecord)


def record_client_assertion(
    session: Session, client_id: str, jti: str, expires_at: datetime
) -> None:
    """RFC 7523 §3: the primary key makes a replayed assertion fail the transaction."""
    session.connection().execute(
        _INSERT_ASSERTION, {"client_id": client_id, "jti": jti, "expires_at": expires_at}
    )


def record_issued_token(session: Session, values: dict[str, Any]) -> None:
    session.connection().execute(_INSERT_ISSUED_TOKEN, values)


def record_audit(session: Session, values: dict[str, Any]) -> None:
    session.connection().execute(_INSERT_AUDIT, values)


# ---- signing key lifecycle (rotation, retirement, compromise) -----------------------


def signing_key(session: Session, kid: str) -> SigningKey | None:
    return session.get(SigningKey, kid)


def tokens_signed_per_kid(session: Session) -> dict[str, int]:
    rows = session.execute(select(IssuedToken.kid, func.count()).group_by(IssuedToken.kid)).all()
    return {kid: count for kid, count in rows}


def revoke_tokens_signed_by(session: Session, kid: str, now: datetime) -> int:
    """Mark every not yet revoked token signed by ``kid`` as revoked; return how many."""
    result = session.execute(
        update(IssuedToken)
        .where(IssuedToken.kid == kid, IssuedToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def add_revocation(session: Session, *, kind: str, value: str, reason: str, now: datetime) -> None:
    session.add(Revocation(kind=kind, value=value, reason=reason, created_at=now))


def add_audit_record(
    session: Session, *, event: str, decision: str, reason: str, detail: str, now: datetime
) -> None:
    session.add(AuditRecord(at=now, event=event, decision=decision, reason=reason, detail=detail))
