"""Writes of the trust configuration: issuers, clients, service credentials, rules.

Every change bumps ``rules_state.generation`` (running services reload within their
refresh interval); every rule change takes a new version from ``rules_state.last_version``
so versions are never reused, even across a rollback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from sts.db.models import Client, Rule, RulesState, ServiceCredential, TrustedIssuer
from sts.policy.rules import compile_rule
from sts.rules.ops import fresh_rule_id


def bump_generation(session: Session) -> None:
    session.execute(
        update(RulesState).where(RulesState.id == 1).values(generation=RulesState.generation + 1)
    )


def next_rule_version(session: Session) -> int:
    session.execute(
        update(RulesState)
        .where(RulesState.id == 1)
        .values(last_version=RulesState.last_version + 1)
    )
    return int(session.scalar(select(RulesState.last_version).where(RulesState.id == 1)) or 0)


def put_rule(session: Session, name: str, definition: Mapping[str, Any], now: datetime) -> Rule:
    """Create or replace a rule (validated first); returns the row with its new version."""
    compile_rule(0, name, 0, definition)  # raises RuleError before anything is written
    version = next_rule_version(session)
    row = session.scalars(select(Rule).where(Rule.name == name)).first()
    effect = str(definition.get("effect", "allow"))
    if row is None:
        row = Rule(
            id=fresh_rule_id(session.connection()),
            name=name,
            version=version,
            effect=effect,
            definition=dict(definition),
            updated_at=now,
        )
        session.add(row)
    else:
        row.version, row.effect, row.definition, row.updated_at = (
            version,
            effect,
            dict(definition),
            now,
        )
    bump_generation(session)
    session.flush()
    return row


def delete_rule(session: Session, name: str) -> None:
    session.execute(delete(Rule).where(Rule.name == name))
    bump_generation(session)


def put_issuer(
    session: Session,
    *,
    name: str,
    issuer: str,
    algorithms: Sequence[str],
    audiences: Sequence[str],
    jwks: Mapping[str, Any] | None = None,
    jwks_uri: str | None = None,
    now: datetime,
) -> TrustedIssuer:
    if (jwks is None) == (jwks_uri is None):
        raise ValueError("an issuer needs exactly one of jwks or jwks_uri")
    row = session.scalars(select(TrustedIssuer).where(TrustedIssuer.name == name)).first()
    if row is None:
        row = TrustedIssuer(name=name, created_at=now)
        session.add(row)
    row.issuer, row.algorithms, row.audiences = issuer, list(algorithms), list(audiences)
    row.jwks = dict(jwks) if jwks is not None else None
    row.jwks_uri = jwks_uri
    bump_generation(session)
    session.flush()
    return row


def put_client(
    session: Session,
    *,
    client_id: str,
    auth_method: str,
    secret_hash: str | None = None,
    jwks: Mapping[str, Any] | None = None,
    is_resource_server: bool = False,
    disabled: bool = False,
    dpop_bound_access_tokens: bool = False,
    introspects: Sequence[str] | None = None,
    now: datetime,
) -> Client:
    row = session.get(Client, client_id)
    if row is None:
        row = Client(client_id=client_id, created_at=now)
        session.add(row)
    row.auth_method, row.secret_hash = auth_method, secret_hash
    row.jwks = dict(jwks) if jwks is not None else None
    row.is_resource_server, row.disabled = is_resource_server, disabled
    row.dpop_bound_access_tokens = dpop_bound_access_tokens
    row.introspects = list(introspects) if introspects is not None else None
    bump_generation(session)
    session.flush()
    return row


def put_credential(
    session: Session,
    *,
    name: str,
    key_id: str,
    secret_hash: str,
    owner_subject: str,
    disabled: bool = False,
    now: datetime,
) -> ServiceCredential:
    row = session.scalars(select(ServiceCredential).where(ServiceCredential.name == name)).first()
    if row is None:
        row = ServiceCredential(name=name, created_at=now)
        session.add(row)
    row.key_id, row.secret_hash, row.owner_subject = key_id, secret_hash, owner_subject
    row.disabled = disabled
    row.disabled_at = now if disabled else None
    session.flush()
    return row
