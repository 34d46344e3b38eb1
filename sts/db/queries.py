"""Every query sts runs lives here, so indexes can be checked against them in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from sts.db.models import AuditRecord, IssuedToken, Revocation, SigningKey

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
