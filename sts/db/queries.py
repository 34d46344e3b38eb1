"""Every query sts runs lives here, so indexes can be checked against them in one place."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.selectable import CTE, CompoundSelect

from sts.db.locks import GOVERNANCE_LOCK, holds_exclusive
from sts.db.models import (
    AuditRecord,
    Base,
    Client,
    ClientAssertion,
    DpopProof,
    IssuedToken,
    Revocation,
    Rule,
    RulesState,
    ServiceCredential,
    SigningKey,
    StatusList,
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


# The exchange's statements: built once here, compiled once per dialect and run on the
# driver's connection by sts.db.exchange_store (no per-call SQLAlchemy layers).

CREDENTIAL_BY_KEY_ID = select(
    ServiceCredential.id,
    ServiceCredential.name,
    ServiceCredential.owner_subject,
    ServiceCredential.secret_hash,
    ServiceCredential.disabled,
).where(ServiceCredential.key_id == bindparam("key_id"))

# PostgreSQL: the governance lock (see sts.db.locks.GOVERNANCE_LOCK) held SHARED until the
# exchange commits. Every key lifecycle step (a compromise above all) and every revocation
# of an identity or a service credential takes it exclusively: it waits for the exchanges
# in flight, whose lineage rows it then sees and revokes, and an exchange that starts
# meanwhile waits for it, then sees the key's or the identity's block.
SHARE_GOVERNANCE_LOCK = select(func.pg_advisory_xact_lock_shared(bindparam("key")))

# (revoked_at,) of a token about to be re-exchanged, its row held FOR SHARE until the
# exchange commits (PostgreSQL; SQLite's write lock is already exclusive), so a
# concurrent revocation of it waits for the exchange and then also revokes the new
# child (see :func:`lock_lineage`).
PARENT_REVOCATION_STATE = (
    select(IssuedToken.revoked_at)
    .where(IssuedToken.jti == bindparam("jti"))
    .with_for_update(read=True)
)


def active_blocks_statement(pairs: int) -> Select[str, str]:
    """Un-lifted blocks on any of ``pairs`` (kind, value) identities, bound as ``k0``,
    ``v0``, ``k1``, ...: an OR of equalities, each on the (kind, value) index."""
    return select(Revocation.kind, Revocation.value).where(
        Revocation.lifted_at.is_(None),
        or_(
            *(
                and_(Revocation.kind == bindparam(f"k{i}"), Revocation.value == bindparam(f"v{i}"))
                for i in range(pairs)
            )
        ),
    )


def active_blocks_params(identities: Sequence[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for i, (kind, value) in enumerate(identities):
        params[f"k{i}"], params[f"v{i}"] = kind, value
    return params


def _insert_values(model: type[Base], names: Sequence[str]) -> Insert:
    """INSERT of exactly these columns, each bound by its name; ``inline`` so that no
    RETURNING of the generated key is added (nothing reads it)."""
    return insert(model).values({name: bindparam(name) for name in names}).inline()


ISSUED_TOKEN_FIELDS = (
    "jti",
    "parent_jti",
    "credential_id",
    "subject",
    "subject_issuer",
    "subject_token_id",
    "actor",
    "actor_parent_jti",
    "actor_credential_id",
    "actor_issuer",
    "actor_token_id",
    "client_id",
    "rule_id",
    "rule_version",
    "audience",
    "scope",
    "kid",
    "issued_at",
    "expires_at",
    "status_list_id",
    "status_idx",
    "dpop_jkt",
)
INSERT_ISSUED_TOKEN = _insert_values(IssuedToken, ISSUED_TOKEN_FIELDS)
AUDIT_FIELDS = tuple(column.name for column in AuditRecord.__table__.columns if column.name != "id")
INSERT_AUDIT = _insert_values(AuditRecord, AUDIT_FIELDS)
ADD_STATUS_LIST = _insert_values(StatusList, ("size", "next_idx", "created_at"))


# What record_unless_blocked_statement reports, among the blocks' kinds, for a DPoP proof
# whose jti was already spent (RFC 9449 §11.1): no token is recorded then either.
SPENT_PROOF = "spent_dpop_proof"


def record_unless_blocked_statement(
    pairs: int, proof: bool = False
) -> Select[str, str] | CompoundSelect[str, str]:
    """PostgreSQL: a token's lineage row and its audit row, inserted only if none of
    ``pairs`` (kind, value) identities is blocked (bound as in
    :func:`active_blocks_statement`), in ONE statement, so one snapshot sees the blocks
    and takes the inserts; it returns the blocks found (nothing is inserted then).

    With ``proof``, the same statement spends the DPoP proof (``proof_jkt``,
    ``proof_jti``, ``proof_expires_at``: inserted unless already there, blocked or not)
    and records the token only if it did; a spent one is returned as a row of kind
    :data:`SPENT_PROOF`. So a proof costs no round trip of its own.

    Lineage values are bound by their names, audit values as ``audit_<name>``; the audit
    row's ``issued_jti`` is the inserted lineage row's, so there is an audit row exactly
    when there is a lineage row, and there is one exactly when no block is returned:
    ``blocked`` is read twice, so PostgreSQL materializes it once and both reads see the
    same rows (an insert that fails raises, it does not skip). Data-modifying CTEs run once and to
    completion whether or not the outer query reads them (PostgreSQL, "WITH Queries",
    7.8.4). Each bind carries its column's type (rendered as a cast), as an INSERT ...
    SELECT gives PostgreSQL no column to infer a parameter's type from.
    """
    blocked = active_blocks_statement(pairs).cte("blocked")
    tokens, audit = IssuedToken.__table__.c, AuditRecord.__table__.c
    unblocked = ~select(blocked.c.kind).exists()
    found: Select[str, str] | CompoundSelect[str, str] = select(blocked.c.kind, blocked.c.value)
    spent: CTE | None = None
    if proof:
        spent = (
            postgresql_insert(DpopProof)
            .values(
                jkt=bindparam("proof_jkt"),
                jti=bindparam("proof_jti"),
                expires_at=bindparam("proof_expires_at"),
            )
            .on_conflict_do_nothing()
            .returning(DpopProof.jti)
            .cte("spent")
        )
        unblocked = and_(unblocked, select(spent.c.jti).exists())
        replayed: Select[str, str] = select(  # constants in the SQL text: nothing more to bind
            literal_column(f"'{SPENT_PROOF}'"), literal_column("''")
        ).where(~select(spent.c.jti).exists())
        found = union_all(found, replayed)
    lineage = (
        insert(IssuedToken)
        .from_select(
            ISSUED_TOKEN_FIELDS,
            select(
                *(bindparam(name, type_=tokens[name].type) for name in ISSUED_TOKEN_FIELDS)
            ).where(unblocked),
        )
        .returning(IssuedToken.jti)
        .cte("lineage")
    )
    audited = insert(AuditRecord).from_select(
        AUDIT_FIELDS,
        select(
            *(
                lineage.c.jti
                if name == "issued_jti"
                else bindparam(f"audit_{name}", type_=audit[name].type)
                for name in AUDIT_FIELDS
            )
        ),
    )
    ctes = (lineage, audited.cte("audit"), *([spent] if spent is not None else []))
    return found.add_cte(*ctes)


def _insert_once(model: Any, columns: tuple[str, ...], dialect_name: str) -> Insert:
    values: dict[str, Any] = {name: bindparam(name) for name in columns}
    insert_for = postgresql_insert if dialect_name == "postgresql" else sqlite_insert
    # preserve_rowcount: SQLAlchemy keeps an INSERT's rowcount only when asked to.
    statement = insert_for(model).values(values).on_conflict_do_nothing()
    return statement.execution_options(preserve_rowcount=True)


# RFC 7523 §3: a JWT assertion is used once; RFC 9449 §11.1: so is a DPoP proof. ``ON
# CONFLICT DO NOTHING``: a replay inserts no row (rowcount 0) instead of failing the
# transaction. Per dialect (SQLite, PostgreSQL).
INSERT_CLIENT_ASSERTION_ONCE = {
    dialect: _insert_once(ClientAssertion, ("client_id", "jti", "expires_at"), dialect)
    for dialect in ("sqlite", "postgresql")
}
INSERT_DPOP_PROOF_ONCE = {
    dialect: _insert_once(DpopProof, ("jkt", "jti", "expires_at"), dialect)
    for dialect in ("sqlite", "postgresql")
}


def record_client_assertion(
    session: Session, client_id: str, jti: str, expires_at: datetime
) -> bool:
    """False when this (client, jti) was already recorded: a replay."""
    statement = INSERT_CLIENT_ASSERTION_ONCE[session.get_bind().dialect.name]
    result = session.connection().execute(
        statement, {"client_id": client_id, "jti": jti, "expires_at": expires_at}
    )
    return bool(result.rowcount)


def record_audit(session: Session, values: dict[str, Any]) -> None:
    session.connection().execute(INSERT_AUDIT, values)


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


# ---- revocation: lineage walks and identity blocks -------------------------------------

# What an operator can name to revoke tokens: the issued_tokens columns each one matches
# (any of them). A credential or an issuer is matched on the actor's side too, exactly as
# the exchange's block check names them (sts.revocation.identities_of): RFC 8693 §4.1,
# the actor in ``act`` is a party to the token, so revoking an identity reaches the
# tokens it acted in as it refuses it new ones.
TOKEN_SELECTORS: dict[str, tuple[Any, ...]] = {
    "jti": (IssuedToken.jti,),
    "subject": (IssuedToken.subject,),
    "client": (IssuedToken.client_id,),
    "credential": (IssuedToken.credential_id, IssuedToken.actor_credential_id),
    "issuer": (IssuedToken.subject_issuer, IssuedToken.actor_issuer),
    "actor": (IssuedToken.actor,),
    # An upstream token (its jti, or sha256:<hash> of it), presented as the subject token
    # or as the actor token: what a leaked token was exchanged for, as the block names it.
    "upstream_token": (IssuedToken.subject_token_id, IssuedToken.actor_token_id),
    # A DPoP key (its RFC 7638 thumbprint): the tokens bound to it (RFC 9449 §6.1).
    "dpop_key": (IssuedToken.dpop_jkt,),
    # A signing key (its kid): the tokens it signed (a key's compromise).
    "key": (IssuedToken.kid,),
}


def tokens_named(kind: str, value: str | int) -> ColumnElement[bool]:
    """The tokens a selector names (``kind`` is a key of :data:`TOKEN_SELECTORS`)."""
    return or_(*(column == value for column in TOKEN_SELECTORS[kind]))


def tokens_in(jtis: Sequence[str]) -> ColumnElement[bool]:
    """The tokens of these jtis (no more than :data:`JTIS_PER_STATEMENT`)."""
    return IssuedToken.jti.in_(jtis)


def upstream_token_roots(
    token_id: str, subject: str | None, issuer: str | None = None
) -> ColumnElement[bool]:
    """The tokens an upstream token was presented for: as the subject token (through
    ``subject``'s index when its ``sub`` is known: ``subject_token_id`` has none; else a
    scan), or as the actor token (``actor_token_id``'s partial index).

    Only where an upstream JWT was presented: the same columns name a service credential
    (``credential:<name>``) or an sts token (its jti) presented instead, and a reported
    token whose ``jti`` mimics one must not reach those. ``issuer``, when known (verified
    by an exposure report, read from the token by ``sts exposure``), narrows it further:
    a jti is unique per issuer (RFC 7519 §4.1.7 asks issuers to avoid collisions across
    issuers too)."""
    as_subject = _upstream_subject_token(token_id, issuer)
    if subject is not None:
        as_subject = and_(IssuedToken.subject == subject, as_subject)
    as_actor = and_(
        IssuedToken.actor_token_id == token_id,
        IssuedToken.actor_parent_jti.is_(None),
        IssuedToken.actor_credential_id.is_(None),
    )
    if issuer is not None:
        as_actor = and_(as_actor, IssuedToken.actor_issuer == issuer)
    return or_(as_subject, as_actor)


def _upstream_subject_token(token_id: str, issuer: str | None) -> ColumnElement[bool]:
    """Tokens exchanged from this upstream JWT as their subject token."""
    condition = and_(
        IssuedToken.subject_token_id == token_id,
        IssuedToken.parent_jti.is_(None),
        IssuedToken.credential_id.is_(None),
    )
    return and_(condition, IssuedToken.subject_issuer == issuer) if issuer else condition


def find_upstream_token_roots(
    session: Session, token_id: str, subject: str | None, issuer: str | None
) -> ColumnElement[bool]:
    """:func:`upstream_token_roots`, with the token's sub learned first when it is not
    known (a scan, to be run before any lock: see :func:`subject_of_upstream_token`)."""
    if subject is None:
        subject = subject_of_upstream_token(session, token_id, issuer)
    return upstream_token_roots(token_id, subject, issuer)


def subject_of_upstream_token(
    session: Session, token_id: str, issuer: str | None = None
) -> str | None:
    """The ``sub`` of the tokens exchanged from this upstream token as their subject (a
    scan: ``subject_token_id`` has no index), or None if there is no such token, or more
    than one ``sub`` (ids colliding across issuers: the sweep then scans, not narrowed)."""
    found = (
        select(IssuedToken.subject)
        .where(_upstream_subject_token(token_id, issuer))
        .distinct()
        .limit(2)
    )
    subjects = session.scalars(found).all()
    return subjects[0] if len(subjects) == 1 else None


def except_revoked_at(roots: ColumnElement[bool], at: datetime) -> ColumnElement[bool]:
    """``roots`` less the tokens revoked at ``at``: those an operator's passes ahead of the
    block revoked (sts.revocation.sweep_ahead), each with its whole lineage, locked until
    stable, so that no token below them is live or can be added. The lineage walk that
    follows need not start from them again; it starts from every other token ``roots``
    names, those revoked earlier by other means included.

    ``at`` is the command's time, which every pass writes as ``revoked_at`` (also for a
    token issued while the passes ran, which so shows a revocation before its issue):
    the mark is what tells their tokens apart. Any other writer of ``revoked_at`` walks
    the lineage in the same transaction, so a token it revoked at that same instant has
    nothing live below it either."""
    return and_(roots, or_(IssuedToken.revoked_at.is_(None), IssuedToken.revoked_at != at))


def unrevoked_roots(
    session: Session,
    roots: ColumnElement[bool],
    now: datetime,
    limit: int,
    after: str | None = None,
) -> list[str]:
    """Up to ``limit`` jtis, in order and past ``after``, of the tokens ``roots`` names
    that are live and not revoked at ``now`` and were issued by then (a page of
    sts.revocation.sweep_passes): the passes read on from the last jti they read, so they
    end even while the identity keeps exchanging (its newer tokens are left to the
    transaction under the lock), and never read a page twice."""
    found = (
        select(IssuedToken.jti)
        .where(
            roots,
            IssuedToken.revoked_at.is_(None),
            IssuedToken.expires_at > now,
            IssuedToken.issued_at <= now,
        )
        .order_by(IssuedToken.jti)
        .limit(limit)
    )
    if after is not None:
        found = found.where(IssuedToken.jti > after)
    return list(session.scalars(found).all())


def tokens_of_rule(rule_id: int, versions: Sequence[int] = ()) -> ColumnElement[bool]:
    condition = IssuedToken.rule_id == rule_id
    return and_(condition, IssuedToken.rule_version.in_(versions)) if versions else condition


# How long ago a token must have expired for a revocation's walk not to start from it. A
# token never outlives what it was exchanged from, nor its actor token (``compute_lifetime``:
# its ``exp`` is at most theirs, to the second), so nothing below an expired token is live;
# the margin only keeps that true should a lifetime ever be computed with some leeway.
EXPIRED_BRANCH_MARGIN = timedelta(minutes=5)


def _lineage(roots: ColumnElement[bool], live_after: datetime | None = None) -> CTE:
    """The jtis of the tokens matching ``roots`` and of every token derived from them,
    transitively: a recursive CTE over both edges (SQLite and PostgreSQL alike), the
    subject's (``parent_jti``: exchanged from it) and the actor's (``actor_parent_jti``:
    minted with it as ``actor_token``; RFC 8693 §4.1). Each edge is walked on its own
    partial index. UNION, not UNION ALL: a token reached along both edges (the same token
    presented as subject and actor) is walked once.

    ``live_after``: the walk starts only from the matching tokens that expire after it
    (:data:`EXPIRED_BRANCH_MARGIN`). An identity's expired tokens, most of those on record
    until ``sts gc``, are matched by ``roots`` themselves (a re-exchanged token keeps its
    subject), so a revocation's walk, which every exchange waits for, skips them and what
    was derived only from them. Only the start is filtered, never the recursive step: a
    condition on the child's ``expires_at`` there let PostgreSQL, with statistics older
    than a bulk load, join each walked row to an index scan of every live token (70,000
    tokens: 316 s instead of 7)."""
    anchor = select(IssuedToken.jti).where(roots)
    if live_after is not None:
        anchor = anchor.where(IssuedToken.expires_at > live_after)
    lineage = anchor.cte("lineage", recursive=True)
    child = aliased(IssuedToken)
    edge = or_(child.parent_jti == lineage.c.jti, child.actor_parent_jti == lineage.c.jti)
    return lineage.union(select(child.jti).join(lineage, edge))


def _live_lineage(roots: ColumnElement[bool], now: datetime) -> CTE:
    """:func:`_lineage` of what a revocation at ``now`` can still change."""
    return _lineage(roots, now - EXPIRED_BRANCH_MARGIN)


def lineage_tokens(session: Session, roots: ColumnElement[bool]) -> Sequence[IssuedToken]:
    """The tokens matching ``roots`` and their descendants, in issuance order."""
    lineage = _lineage(roots)
    return session.scalars(
        select(IssuedToken)
        .where(IssuedToken.jti.in_(select(lineage.c.jti)))
        .order_by(IssuedToken.issued_at, IssuedToken.jti)
    ).all()


MAX_LINEAGE_LOCK_ROUNDS = 20


class LineageUnstable(RuntimeError):
    """A lineage kept growing through :data:`MAX_LINEAGE_LOCK_ROUNDS` walks while it was
    being locked (:func:`lock_lineage`): re-exchanges faster than the walks."""


# Tokens named per statement when a lineage is locked or revoked: each jti is one bound
# parameter, and PostgreSQL's protocol carries at most 65,535 of them per statement
# (SQLite 32,766 before 3.32); an offboarded subject or a revoked rule can hold far more.
JTIS_PER_STATEMENT = 5000


def _in_chunks(jtis: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(jtis), JTIS_PER_STATEMENT):
        yield jtis[start : start + JTIS_PER_STATEMENT]


def lock_lineage(session: Session, roots: ColumnElement[bool], now: datetime) -> list[str]:
    """The jtis of ``roots`` still live at ``now`` (give or take
    :data:`EXPIRED_BRANCH_MARGIN`) and of all their descendants, every row locked FOR
    UPDATE.

    Closes the race with a concurrent re-exchange (which holds its parent row locked until
    it commits: FOR SHARE, and PostgreSQL's FOR KEY SHARE for the child's foreign key):
    locking waits for that exchange, and the next walk, a new statement with a new
    snapshot, sees the child it added. Repeat until the walk is stable. SQLite needs none
    of this (one writer at a time), and SQLAlchemy emits no FOR UPDATE there.
    """
    jtis = sorted(session.scalars(select(_live_lineage(roots, now).c.jti)).all())
    for _ in range(MAX_LINEAGE_LOCK_ROUNDS):
        if session.get_bind().dialect.name == "sqlite" or not jtis:
            return jtis
        for chunk in _in_chunks(jtis):
            session.execute(
                select(IssuedToken.jti).where(IssuedToken.jti.in_(chunk)).with_for_update()
            )
        again = sorted(session.scalars(select(_live_lineage(roots, now).c.jti)).all())
        if again == jtis:
            return jtis
        jtis = again
    raise LineageUnstable("the lineage kept growing while it was being revoked")


def revoke_lineage(session: Session, roots: ColumnElement[bool], now: datetime) -> int:
    """Revoke the live tokens matching ``roots`` and every token exchanged from them.
    Returns how many tokens were newly revoked.

    No exchange in flight (SQLite's single writer, or the governance lock held
    exclusively: an identity's revocation): the lineage cannot grow meanwhile, so one
    UPDATE over the walk does it. Otherwise (a token by jti, a rule) the lineage is first
    locked until stable (:func:`lock_lineage`), then revoked by jti."""
    if session.get_bind().dialect.name == "sqlite" or holds_exclusive(session, GOVERNANCE_LOCK):
        walked = select(_live_lineage(roots, now).c.jti)
        return _revoke_where(session, IssuedToken.jti.in_(walked), now)
    return sum(
        _revoke_where(session, IssuedToken.jti.in_(chunk), now)
        for chunk in _in_chunks(lock_lineage(session, roots, now))
    )


def _revoke_where(session: Session, tokens: ColumnElement[bool], now: datetime) -> int:
    result = session.execute(
        update(IssuedToken)
        .where(tokens, IssuedToken.revoked_at.is_(None), IssuedToken.expires_at > now)
        .values(revoked_at=now)
        .returning(IssuedToken.jti)
        .execution_options(synchronize_session=False)
    )
    # Counted from RETURNING: a statement led by WITH reports no rowcount on SQLite.
    return len(result.all())


def revoked_in_ancestry(session: Session, jti: str) -> bool:
    """Is this token, or any token it was derived from, revoked? Walks up both edges:
    the token it was exchanged from and the sts token its actor presented (RFC 8693
    §4.1), on the primary key. UNION: an ancestor reached along both is walked once."""
    ancestry = (
        select(IssuedToken.parent_jti, IssuedToken.actor_parent_jti, IssuedToken.revoked_at)
        .where(IssuedToken.jti == jti)
        .cte("ancestry", recursive=True)
    )
    parent = aliased(IssuedToken)
    ancestry = ancestry.union(
        select(parent.parent_jti, parent.actor_parent_jti, parent.revoked_at).join(
            ancestry,
            or_(parent.jti == ancestry.c.parent_jti, parent.jti == ancestry.c.actor_parent_jti),
        )
    )
    found = session.scalar(
        select(func.count()).select_from(ancestry).where(ancestry.c.revoked_at.is_not(None))
    )
    return bool(found)


def active_blocks(session: Session, identities: Sequence[tuple[str, str]]) -> Sequence[str]:
    """Kinds of the un-lifted blocks on any of these (kind, value) identities: one query."""
    if not identities:
        return []
    rows = session.execute(
        active_blocks_statement(len(identities)), active_blocks_params(identities)
    ).all()
    return [kind for kind, _value in rows]


def add_block(
    session: Session,
    kind: str,
    value: str,
    reason: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> None:
    session.execute(
        insert(Revocation).values(
            kind=kind, value=value, reason=reason, created_at=now, expires_at=expires_at
        )
    )


def active_block_values(session: Session, kind: str) -> list[str]:
    """The values of the un-lifted blocks of one kind."""
    found = select(Revocation.value).where(Revocation.kind == kind, Revocation.lifted_at.is_(None))
    return list(dict.fromkeys(session.scalars(found)))


def lift_blocks(session: Session, kind: str, value: str, now: datetime) -> int:
    result = session.execute(
        update(Revocation)
        .where(Revocation.kind == kind, Revocation.value == value, Revocation.lifted_at.is_(None))
        .values(lifted_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def key_is_revoked(session: Session, kid: str) -> bool:
    return bool(active_blocks(session, [("key", kid)]))


def set_credential_disabled(
    session: Session, credential_id: int, disabled: bool, now: datetime
) -> None:
    session.execute(
        update(ServiceCredential)
        .where(ServiceCredential.id == credential_id)
        .values(disabled=disabled, disabled_at=now if disabled else None)
    )


def credential_by_name(session: Session, name: str) -> ServiceCredential | None:
    return session.scalars(select(ServiceCredential).where(ServiceCredential.name == name)).first()


def client_by_id(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def rule_by_name(session: Session, name: str) -> Rule | None:
    return session.scalars(select(Rule).where(Rule.name == name)).first()


def trusted_issuer_by_name(session: Session, name: str) -> TrustedIssuer | None:
    return session.scalars(select(TrustedIssuer).where(TrustedIssuer.name == name)).first()


# ---- token status lists (draft-ietf-oauth-status-list) --------------------------------


_OPEN_STATUS_LIST = (
    select(StatusList.id)
    .where(StatusList.retired_at.is_(None), StatusList.next_idx < StatusList.size)
    .order_by(StatusList.id)
    .limit(1)
    .scalar_subquery()
)
# A block of indexes from the open list in ONE statement (sts.db.status_indexes): returns
# (list id, next_idx after the claim, size), so the block is [next_idx - block, min(next_idx,
# size)); no row when none is open. The counter may pass ``size`` on a list's last block;
# only ``next_idx < size`` counts as open, so no index is handed out twice. Concurrent
# claims on PostgreSQL queue on the row lock and re-check ``next_idx < size`` after it.
CLAIM_STATUS_BLOCK = (
    update(StatusList)
    .where(StatusList.id == _OPEN_STATUS_LIST, StatusList.next_idx < StatusList.size)
    .values(next_idx=StatusList.next_idx + bindparam("block"), last_claim_at=bindparam("now"))
    .returning(StatusList.id, StatusList.next_idx, StatusList.size)
    .execution_options(synchronize_session=False)
)
# A full list is retired only this long after its last block was claimed: a process uses a
# block for at most BLOCK_MAX_AGE (60 s) after claiming it, so no token is issued into a
# list that is no longer served, even with replicas' clocks minutes apart.
RETIRE_AFTER_LAST_CLAIM = timedelta(minutes=10)


def served_status_list(session: Session, list_id: int) -> StatusList | None:
    row = session.get(StatusList, list_id)
    return row if row is not None and row.retired_at is None else None


def served_status_list_ids(session: Session) -> Sequence[int]:
    return session.scalars(
        select(StatusList.id).where(StatusList.retired_at.is_(None)).order_by(StatusList.id)
    ).all()


def revoked_status_indexes(session: Session, list_id: int) -> Sequence[int]:
    """Indexes in this list of tokens that are revoked or derived from a revoked token,
    along either edge of :func:`_lineage` (as introspection judges them: a child minted
    while its parent or actor token was being revoked is caught here too)."""
    revoked = _lineage(IssuedToken.revoked_at.is_not(None))
    return session.scalars(
        select(IssuedToken.status_idx).where(
            IssuedToken.status_list_id == list_id,
            IssuedToken.jti.in_(select(revoked.c.jti)),
            IssuedToken.status_idx.is_not(None),
        )
    ).all()  # type: ignore[return-value]


# ---- housekeeping (sts gc) ---------------------------------------------------------------


def detach_children_of_expired(session: Session, cutoff: datetime) -> None:
    """Before lineage that expired before ``cutoff`` is deleted: a child never outlives
    its parent, but any child left is detached so the foreign key holds."""
    # Correlated on the parent's primary key: the unexpired children are the few rows to
    # look at; an IN over every expired jti first gathered them all (600,000: 0.3 s).
    parent = aliased(IssuedToken)
    expired_parent = select(parent.jti).where(
        parent.jti == IssuedToken.parent_jti, parent.expires_at < cutoff
    )
    session.execute(
        update(IssuedToken)
        .where(
            IssuedToken.parent_jti.is_not(None),
            IssuedToken.expires_at >= cutoff,
            expired_parent.exists(),
        )
        .values(parent_jti=None)
        .execution_options(synchronize_session=False)
    )


def delete_expired_lineage(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` issued_tokens rows that expired before ``cutoff`` (found on
    the ``expires_at`` index) and have no child left: leaves first, so that the foreign
    key holds whichever rows a batch takes; their parents go in a later batch. After
    :func:`detach_children_of_expired`, every child of an expired row has expired too."""
    child = aliased(IssuedToken)
    batch = (
        select(IssuedToken.jti)
        .where(
            IssuedToken.expires_at < cutoff,
            ~select(child.jti).where(child.parent_jti == IssuedToken.jti).exists(),
        )
        .limit(limit)
    )
    return _delete_in(session, IssuedToken.jti, batch)


def delete_spent_blocks(session: Session, cutoff: datetime) -> int:
    """Blocks lifted, or past their own expiry (a block on one upstream token), before
    ``cutoff``."""
    lifted = and_(Revocation.lifted_at.is_not(None), Revocation.lifted_at < cutoff)
    expired = and_(Revocation.expires_at.is_not(None), Revocation.expires_at < cutoff)
    result = session.execute(delete(Revocation).where(or_(lifted, expired)))
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_spent_replay_records(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` used client assertions and as many DPoP proofs whose
    ``expires_at`` is before ``cutoff``: their own expiry refuses them by then, so their
    record no longer guards against a replay (RFC 7523 §3, RFC 9449 §11.1)."""
    deleted = 0
    tables: tuple[tuple[Any, tuple[Any, ...]], ...] = (
        (ClientAssertion, (ClientAssertion.client_id, ClientAssertion.jti)),
        (DpopProof, (DpopProof.jkt, DpopProof.jti)),
    )
    for model, primary_key in tables:
        key = tuple_(*primary_key)
        spent = select(*primary_key).where(model.expires_at < cutoff)
        result = session.execute(
            delete(model)
            .where(key.in_(spent.limit(limit)))
            .execution_options(synchronize_session=False)
        )
        deleted += int(result.rowcount)  # type: ignore[attr-defined]
    return deleted


def delete_old_audit(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` audit records older than ``cutoff`` (on the ``at`` index)."""
    batch = select(AuditRecord.id).where(AuditRecord.at < cutoff).limit(limit)
    return _delete_in(session, AuditRecord.id, batch)


def _delete_in(session: Session, key: Any, batch: Select[Any]) -> int:
    """Delete the rows whose primary ``key`` the ``batch`` query returns."""
    result = session.execute(
        delete(key.class_).where(key.in_(batch)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def retire_spent_status_lists(session: Session, now: datetime) -> int:
    """Retire full lists (no index will ever be allocated from them again) none of whose
    tokens is still unexpired, and whose last block no process may still be using."""
    live = select(IssuedToken.jti).where(
        IssuedToken.status_list_id == StatusList.id, IssuedToken.expires_at >= now
    )
    result = session.execute(
        update(StatusList)
        .where(
            StatusList.retired_at.is_(None),
            StatusList.next_idx >= StatusList.size,
            or_(
                StatusList.last_claim_at.is_(None),
                StatusList.last_claim_at < now - RETIRE_AFTER_LAST_CLAIM,
            ),
            ~live.exists(),
        )
        .values(retired_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
