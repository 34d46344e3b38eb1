"""Typed models (SQLAlchemy 2.0 ``Mapped[]``). The baseline migration creates exactly these.

Secrets are never stored: clients and service credentials keep only hashes; private
signing keys are stored encrypted (or live encrypted in the file keystore).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sts.db.types import UTCDateTime

# A naming convention makes constraint names deterministic, so migrations can drop them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (so that it is the rowid alias and autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Client(Base):
    """An OAuth client of the token endpoint (RFC 6749 §2)."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    # client_secret_basic | client_secret_post | private_key_jwt | none
    auth_method: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # public keys for private_key_jwt
    is_resource_server: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    # RFC 9449 §5.2: the client always uses DPoP, so a token request without a proof is
    # refused (migration 0010). The server default keeps older rules revisions, which
    # do not name the column, valid.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # RFC 7662 §2.2: the audiences a resource server may introspect (migration 0011);
    # a token for none of them is inactive to it. NULL: every token, as before.
    introspects: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))


class TrustedIssuer(Base):
    """An external token issuer whose JWTs sts accepts as subject or actor tokens."""

    __tablename__ = "trusted_issuers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    issuer: Mapped[str] = mapped_column(String(2048), unique=True)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # inline JWKS, or ...
    jwks_uri: Mapped[str | None] = mapped_column(String(2048))  # ... fetched and cached
    algorithms: Mapped[list[str]] = mapped_column(JSON)
    audiences: Mapped[list[str]] = mapped_column(JSON)  # aud must contain one of these
    created_at: Mapped[datetime]


class ServiceCredential(Base):
    """A long-lived opaque API key. Only its hash is stored; ``key_id`` finds the row."""

    __tablename__ = "service_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    owner_subject: Mapped[str] = mapped_column(String(1024))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class Rule(Base):
    """A downscoping rule. ``version`` increases on every change and is never reused."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    effect: Mapped[str] = mapped_column(String(8))  # allow | deny
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]


class RulesState(Base):
    """A single row: a generation counter bumped on every rules change (cache invalidation)
    and the version sequence, so rule versions are never reused, even across a rollback."""

    __tablename__ = "rules_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    last_version: Mapped[int] = mapped_column(Integer, default=0)


class SigningKey(Base):
    """Metadata of a signing key. The private key lives in a keystore (file or this row)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)  # RFC 7638 thumbprint
    alg: Mapped[str] = mapped_column(String(16))
    # pending | active | retired | removed | compromised
    state: Mapped[str] = mapped_column(String(16), index=True)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    encrypted_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    removed_at: Mapped[datetime | None]
    compromised_at: Mapped[datetime | None]


def _indexed_where_set(table: str, column: str) -> Index:
    """An index of ``column`` over the rows where it is not NULL (SQLite and PostgreSQL)."""
    where = text(f"{column} IS NOT NULL")
    return Index(f"ix_{table}_{column}", column, sqlite_where=where, postgresql_where=where)


class IssuedToken(Base):
    """One row per minted token: the lineage that revocation walks."""

    __tablename__ = "issued_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_jti: Mapped[str | None] = mapped_column(String(64), ForeignKey("issued_tokens.jti"))
    credential_id: Mapped[int | None] = mapped_column(ForeignKey("service_credentials.id"))
    subject: Mapped[str] = mapped_column(String(1024), index=True)
    subject_issuer: Mapped[str] = mapped_column(String(2048))
    # The subject token's jti, or sha256:<hash> of it ("credential:<name>" for a service
    # credential): finds what a leaked upstream token was exchanged for (``sts exposure``,
    # an exposure report), with ``actor_token_id``. Not indexed: every exchange would
    # write its page (measured on PostgreSQL: +20 µs of backend CPU and +1.3 WAL records
    # per exchange); the lookup, which runs while every exchange waits for it, goes
    # through ``subject``'s index when the leaked token's ``sub`` is known
    # (sts.db.queries.upstream_token_roots).
    subject_token_id: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str | None] = mapped_column(String(1024))
    # The actor's lineage (RFC 8693 §4.1: the actor in ``act`` is a party to the token, so
    # a token an agent acted in is derived from the agent's token or credential too): the
    # sts token presented as ``actor_token``, the service credential presented as
    # ``actor_token``, and the issuer of the actor token, as the exchange's block check
    # names them. Set only when an actor token was presented (NULL otherwise, as on every
    # exchange from an external JWT alone). Columns rather than an edge table: a token has
    # at most one current actor (earlier actors nest in ``act`` and are reached through
    # the ancestors' own edges), and the lineage row stays the exchange's one insert.
    # No foreign keys: the exchange already holds an actor token's row FOR SHARE
    # (``parent_revocation_state``), so a key check would only lock it again; a token
    # expires no later than its actor token (``compute_lifetime``), so ``sts gc``, which
    # deletes leaves first along ``parent_jti`` only, finds them expired together (a
    # dangling value matches nothing); and adding a key on SQLite rebuilds the table. A
    # deleted credential's id, if ever reused, could only revoke more, never less.
    actor_parent_jti: Mapped[str | None] = mapped_column(String(64))
    actor_credential_id: Mapped[int | None] = mapped_column(Integer)
    actor_issuer: Mapped[str | None] = mapped_column(String(2048))
    # The actor token's id, as ``subject_token_id`` names the subject token's (migration
    # 0007): a leaked upstream token presented as ``actor_token`` is found too.
    actor_token_id: Mapped[str | None] = mapped_column(String(255))
    # The key a DPoP-bound token is bound to (its ``cnf.jkt``, RFC 9449 §6.1; migration
    # 0009): ``sts revoke --dpop-key`` revokes every token bound to a leaked key.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(255), index=True)
    rule_id: Mapped[int] = mapped_column(Integer)
    rule_version: Mapped[int] = mapped_column(Integer)
    audience: Mapped[list[str]] = mapped_column(JSON)
    scope: Mapped[str] = mapped_column(Text)
    # Not indexed (nor rule_id/rule_version): every token of a period shares the active
    # key, and a rule's tokens are a large share of all, so the queries on them (a key's
    # compromise, ``sts revoke --rule``) match much of the table and scan it anyway; an
    # index would only cost every exchange its page (migration 0004).
    kid: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # draft-ietf-oauth-status-list: where this token's bit lives (list, index).
    # No foreign key (migration 0005): on PostgreSQL its check locked the current list's
    # row (FOR KEY SHARE) in every exchange, a WAL record and, with exchanges in parallel,
    # a MultiXact each time. It guarded nothing reachable: the id comes from a claim on
    # that row (sts.db.status_indexes), and lists are never deleted, only retired.
    status_list_id: Mapped[int | None] = mapped_column(Integer)
    status_idx: Mapped[int | None] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        # Partial: a token exchanged from an external JWT has no parent, no credential and
        # no actor token, so its insert writes four index pages fewer. Every query on these
        # columns compares them with a value (or joins on them), which implies IS NOT NULL:
        # both SQLite's and PostgreSQL's planners use a partial index then.
        # ``actor_issuer`` is not indexed: ``sts revoke --issuer`` scans for
        # ``subject_issuer`` (not indexed either) in the same query.
        *(
            _indexed_where_set("issued_tokens", column)
            for column in (
                "parent_jti",
                "credential_id",
                "actor_parent_jti",
                "actor_credential_id",
                "actor_token_id",
                "dpop_jkt",
            )
        ),
        # An index is never given to two tokens of the same list (the allocator's safety net).
        Index("ix_issued_tokens_status", "status_list_id", "status_idx", unique=True),
    )


class StatusList(Base):
    """A Token Status List (draft-ietf-oauth-status-list): ``size`` one-bit entries.

    ``next_idx`` is the allocation counter, advanced by a block of indexes at a time inside
    an exchange's transaction (row-locked), so replicas never hand out the same index
    (sts.db.status_indexes); it may pass ``size`` on the last block. ``last_claim_at`` is
    when the last block was claimed: a full list is retired only well after it. A full
    list is never written to again; a retired one is no longer served. Ids are never
    reused.
    """

    __tablename__ = "status_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    next_idx: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]
    last_claim_at: Mapped[datetime | None]


class Revocation(Base):
    """A revocation or block: of one token, or of an identity (subject, client, ...)."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # jti | subject | client | credential | issuer | rule | actor | key | upstream_token
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(2048))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    lifted_at: Mapped[datetime | None]
    # When the block can no longer matter (migration 0008): a block on an upstream token
    # names one JWT, which no exchange accepts after its ``exp`` (plus the clock leeway);
    # ``sts gc`` deletes the row after the lineage retention. Set only from a verified
    # ``exp`` (an exposure report); NULL otherwise: the block stays until lifted.
    expires_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_revocations_kind_value", "kind", "value"),)


class ClientAssertion(Base):
    """``jti`` values of client assertions already used (RFC 7523 §3 replay protection)."""

    __tablename__ = "client_assertions"

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class DpopProof(Base):
    """``jti`` values of DPoP proofs already used, per proof key (RFC 9449 §11.1)."""

    __tablename__ = "dpop_proofs"

    jkt: Mapped[str] = mapped_column(String(64), primary_key=True)  # RFC 7638 thumbprint
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditRecord(Base):
    """Append-only: one row per decision. Tokens appear only as ``jti`` or a SHA-256 hash."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(8))  # allow | deny | info
    reason: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(1024))
    subject_issuer: Mapped[str | None] = mapped_column(String(2048))
    subject_token_id: Mapped[str | None] = mapped_column(String(255))  # jti or sha256:...
    actor: Mapped[str | None] = mapped_column(String(1024))
    requested_audiences: Mapped[list[str] | None] = mapped_column(JSON)
    requested_scope: Mapped[str | None] = mapped_column(Text)
    rule_id: Mapped[int | None] = mapped_column(Integer)
    rule_version: Mapped[int | None] = mapped_column(Integer)
    # Not indexed: sts never looks an audit row up by token. An operator finds one through
    # ``at`` and the time in the jti's first 12 hex digits (README, "Errors").
    issued_jti: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
