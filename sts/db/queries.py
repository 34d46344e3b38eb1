"""Every query sts runs lives here, so indexes can be checked against them in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from sts.db.models import SigningKey

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
