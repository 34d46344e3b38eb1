"""Revocation that reaches every derived token, and blocks on identities.

Revoking a token revokes every token derived from it, transitively, in the caller's
transaction: every token exchanged from it (``issued_tokens.parent_jti``) and every token
minted with it as the actor token (``actor_parent_jti``; RFC 8693 §4.1, the actor is a
party to the token). A block (a ``revocations`` row naming a subject, client,
credential, issuer or actor) refuses new exchanges for that identity until it is lifted;
revoking an identity reaches the live tokens it is on either side of, as the block
covers both sides of a new exchange (:func:`identities_of`,
``sts.db.queries.TOKEN_SELECTORS``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sts import errors
from sts.audit import AuditEntry, record
from sts.db import queries
from sts.db.locks import GOVERNANCE_LOCK, hold_exclusive, write_transaction
from sts.db.models import ServiceCredential
from sts.policy.evaluate import TokenFacts

log = logging.getLogger(__name__)

EVENT_REVOCATION = "token_revocation"
# ``upstream_token``: one upstream JWT (its jti, or sha256:<hash> of it), blocked once it
# has leaked (``sts exposure --revoke``, an exposure report); ``dpop_key``: a DPoP key
# (RFC 9449), by its thumbprint, once its private key has leaked; the others name
# identities.
IDENTITY_KINDS = (
    "subject",
    "client",
    "credential",
    "issuer",
    "actor",
    "upstream_token",
    "dpop_key",
)


def revoke_token(session: Session, jti: str, now: datetime) -> int:
    """Revoke one token and everything derived from it (exchanged from it, or minted
    with it as actor); how many were newly revoked."""
    return queries.revoke_lineage(session, queries.tokens_named("jti", jti), now)


def revoke_credential(
    session: Session,
    credential: ServiceCredential,
    now: datetime,
    before_lock: Callable[[], None] | None = None,
) -> int:
    """Disable a service credential, block it, and revoke every token derived from it:
    presented as the subject token or as the actor token, and their descendants.

    The block, as ``sts revoke --credential`` stores it, is what keeps a leaked key out:
    the ``disabled`` flag alone is also written by rules revisions (a rollback, or a
    revision generated from a rules file that does not say ``disabled: true``), which
    would turn the key back on. Only ``sts revoke --lift --credential`` lifts it.
    ``before_lock`` runs just before the governance lock is taken (not when the credential
    is kept out already); what it raises ends the revocation before the lock."""
    blocked = queries.active_blocks(session, [("credential", credential.name)])
    kept_out = credential.disabled and bool(blocked)
    if not kept_out:  # disabled, blocked and committed: no exchange can race it any more
        if before_lock is not None:
            before_lock()
        hold_exchanges_back(session)
    queries.set_credential_disabled(session, credential.id, True, now)
    count = queries.revoke_lineage(session, queries.tokens_named("credential", credential.id), now)
    if not blocked:
        block_identity(session, "credential", credential.name, "credential revoked", now)
    return count


def identities_of(
    client_id: str | None,
    subject: TokenFacts,
    actor: TokenFacts | None,
    upstream_tokens: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The (kind, value) identities an exchange involves, as blocks name them;
    ``upstream_tokens`` are the names of the upstream JWTs it presents (subject, actor),
    each as :func:`upstream_token_block_names` gives them."""
    identities = [("subject", subject.subject), ("issuer", subject.issuer)]
    if client_id is not None:
        identities.append(("client", client_id))
    if subject.source == "credential":
        identities.append(("credential", subject.source_name))
    if actor is not None:
        identities += [("actor", actor.subject), ("issuer", actor.issuer)]
        if actor.source == "credential":
            identities.append(("credential", actor.source_name))
    identities += [("upstream_token", name) for name in upstream_tokens]
    return identities


def exchange_identities(
    client_id: str | None,
    subject: TokenFacts,
    actor: TokenFacts | None,
    signing_kid: str,
    upstream_tokens: Sequence[str] = (),
    dpop_key: str | None = None,
    presented_kids: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """What an exchange's block check covers: every identity it involves (the upstream
    tokens it presents among them), the DPoP key that signed its proof, the key about
    to sign, and the keys that signed the sts tokens it presents (``presented_kids``):
    a key marked compromised since this process last read the key ring still verifies
    here until the next read, and a token forged with it must not be exchanged."""
    identities = identities_of(client_id, subject, actor, upstream_tokens)
    if dpop_key is not None:
        identities.append(("dpop_key", dpop_key))
    keys = dict.fromkeys([signing_kid, *presented_kids])  # once each, the signer first
    return [*identities, *(("key", kid) for kid in keys)]


def refuse_if_blocked(blocked: Sequence[str]) -> None:
    """The refusal for the blocks an exchange's check found (nothing was recorded for
    it). An offboarded identity gets no new token; a key marked compromised after this
    process last read its key ring signs nothing more (the caller retries once the ring
    has moved to the new key)."""
    if not blocked:
        return
    if "client" in blocked:
        raise errors.UnauthorizedClient(
            "This client may not exchange tokens.", reason="blocked.client"
        )
    if "dpop_key" in blocked:  # RFC 9449 §5: the proof is what is refused
        raise errors.InvalidDpopProof(
            "The DPoP proof's key has been revoked.", reason="blocked.dpop_key"
        )
    identity_blocks = [kind for kind in blocked if kind != "key"]
    if identity_blocks:
        # A leaked upstream token is refused as a token; the others name who is refused.
        who = (
            "subject or actor token"
            if identity_blocks[0] == "upstream_token"
            else "subject or actor"
        )
        raise errors.InvalidRequest(
            f"The {who} has been revoked.", reason=f"blocked.{identity_blocks[0]}"
        )
    raise errors.TemporarilyUnavailable(
        "The signing key is being replaced; retry shortly.", reason="keys.compromised"
    )


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


def hold_exchanges_back(session: Session) -> None:
    """Take the governance lock exclusively (sts.db.locks.GOVERNANCE_LOCK), BEFORE looking
    for the tokens to revoke: exchanges in flight (which hold it shared) are waited for,
    so the sweep that follows sees their tokens; exchanges that begin later wait for this
    transaction's commit, then see the block (or the disabled credential) and are
    refused. Every exchange waits meanwhile, so the holder commits soon after.

    Not needed to revoke a token by jti: a re-exchange holds its parent row FOR SHARE,
    which the lineage walk's FOR UPDATE waits for (queries.lock_lineage)."""
    hold_exclusive(session, GOVERNANCE_LOCK)


def block_identity(
    session: Session,
    kind: str,
    value: str,
    reason: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> None:
    """Refuse new exchanges involving this identity once committed (``expires_at``: when
    the block can no longer matter, for ``sts gc``). A caller that also revokes the
    identity's tokens calls :func:`hold_exchanges_back` before looking for them (taken
    again here, it is granted at once)."""
    if kind not in IDENTITY_KINDS:
        raise ValueError(f"not an identity kind: {kind}")
    hold_exchanges_back(session)
    if not queries.active_blocks(session, [(kind, value)]):
        queries.add_block(session, kind, value, reason, now, expires_at)


def upstream_token_block_names(token_id: str, issuer: str) -> tuple[str, str]:
    """The names a block can give an upstream token an exchange presents: its id alone, as
    an operator names it (``sts revoke --upstream-token ID``: under every issuer, as the
    operator does not say which), and its id under its issuer, as an exposure report
    names it (:func:`issuer_scoped`)."""
    return token_id, issuer_scoped(issuer, token_id)


def issuer_scoped(issuer: str, token_id: str) -> str:
    """An upstream token's id under its issuer: a ``jti`` is unique only per issuer (RFC
    7519 §4.1.7 asks issuers to avoid collisions across issuers, which a tenant who runs
    a trusted issuer need not do). A public exposure report of one issuer's token must
    not refuse another issuer's token that carries the same ``jti``.

    The issuer is named by a digest of its URL (``iss:`` and 128 bits), not the URL:
    a URL of up to 2,048 characters and an id of up to 255 would not fit the block's
    2,048. The first space ends it."""
    return f"{SCOPED_PREFIX}{_issuer_tag(issuer)} {token_id}"


SCOPED_PREFIX = "iss:"


@functools.lru_cache(maxsize=256)
def _issuer_tag(issuer: str) -> str:
    digest = hashlib.sha256(issuer.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def names_upstream_token(block_value: str, token_id: str) -> bool:
    """Whether a block's value names this upstream token id, under any issuer or one."""
    if block_value == token_id:
        return True
    scope, _, named = block_value.partition(" ")
    return scope.startswith(SCOPED_PREFIX) and named == token_id


def revoke_upstream_token(
    session: Session,
    token_id: str,
    roots: ColumnElement[bool],
    reason: str,
    now: datetime,
    expires_at: datetime | None = None,
    issuer: str | None = None,
    before_lock: Callable[[], None] | None = None,
) -> int:
    """A leaked upstream token: revoke every token minted from it, as subject or actor
    token (``roots``: :func:`sts.db.queries.find_upstream_token_roots`, built before this
    call so that any scan it needs runs before the lock below, which holds every exchange
    back), with their descendants, and block it from new exchanges (sts does not own the
    token, so cannot revoke it; it can refuse it). ``expires_at``, its verified ``exp``,
    lets ``sts gc`` delete the block once it cannot matter. ``issuer``, when the token was
    verified as that issuer's (an exposure report), scopes the block to it
    (:func:`issuer_scoped`); without it (an operator), the block covers the id under
    every issuer. ``before_lock`` runs just before the governance lock is taken (not for a
    token blocked already); what it raises ends the revocation before the lock. How many
    tokens were newly revoked."""
    blocked_as = issuer_scoped(issuer, token_id) if issuer is not None else token_id
    covering = {token_id, blocked_as}  # an unscoped block covers every issuer's
    if queries.active_blocks(session, [("upstream_token", name) for name in covering]):
        # Blocked and swept already, under the lock: every exchange since has been
        # refused. Nothing to wait for (a public report must not hold exchanges back
        # again and again with the same token).
        return 0
    if before_lock is not None:
        before_lock()
    hold_exchanges_back(session)  # first, as for an identity: see revoke_by_operator
    count = queries.revoke_lineage(session, roots, now)
    block_identity(session, "upstream_token", blocked_as, reason, now, expires_at)
    return count


@dataclass(frozen=True)
class OperatorOutcome:
    revoked: int  # tokens newly revoked (the named ones and their descendants)
    blocked: bool  # a block on the identity is now in place
    lifted: int = 0  # blocks lifted (--lift)


class UnknownTarget(LookupError):
    """The operator named a credential, issuer or rule that does not exist."""


def revoke_by_operator(
    session: Session,
    kind: str,
    value: str,
    *,
    versions: Sequence[int] = (),
    reason: str,
    now: datetime,
    swept: int | None = None,
) -> OperatorOutcome:
    """``sts revoke``: revoke every live token the selector names and their descendants;
    where it names an identity, block new exchanges for it. One audit record.

    ``swept``: how many tokens :func:`sweep_ahead` revoked at ``now`` before this
    transaction; the walk here, which every exchange waits for, does not start from the
    tokens it revoked again (``queries.except_revoked_at``)."""
    if kind == "upstream_token":  # the lock, the sweep and the block, in that order
        roots = queries.find_upstream_token_roots(session, value, None, None)
        count = revoke_upstream_token(session, value, roots, reason, now)
        _record_operator_revocation(session, kind, value, versions, count, True, reason, now)
        return OperatorOutcome(revoked=count, blocked=True)
    if kind in IDENTITY_KINDS:
        # First: the sweep below must see every token of an exchange that did not see
        # the block (a jti or a rule leaves no block for an exchange to miss).
        hold_exchanges_back(session)
    value = _target(session, kind, value)
    if kind == "credential":
        queries.set_credential_disabled(session, _credential_id(session, value), True, now)
    roots = _operator_roots(session, kind, value, versions)
    if swept is not None:
        roots = queries.except_revoked_at(roots, now)
    count = queries.revoke_lineage(session, roots, now) + (swept or 0)
    blocked = kind in IDENTITY_KINDS
    if blocked:
        block_identity(session, kind, value, reason, now)
    _record_operator_revocation(
        session, kind, value, versions, count, blocked, reason, now, ahead=swept
    )
    return OperatorOutcome(revoked=count, blocked=blocked)


# The identities whose revocation sweeps ahead of its block (sweep_ahead): those an
# operator offboards, whose tokens can number tens of thousands. A leaked upstream token
# was exchanged a handful of times; finding its tokens can take a scan, once is enough.
SWEPT_AHEAD = ("subject", "client", "credential", "issuer", "actor", "dpop_key")
# Tokens whose lineage one pass revokes. On PostgreSQL a pass holds back only the
# exchanges of those tokens; on SQLite it holds every writer back while it runs: ~40 ms
# for 5,000 tokens here, ~10 ms for 1,000 (bench.sweep).
ROOTS_PER_PASS = 5000
SQLITE_ROOTS_PER_PASS = 1000
# The identity's tokens read at a time for the passes (a read holds no writer back). On
# SQLite finding them can mean scanning all the identity's tokens, so they are read in
# pages larger than a pass: re-reading for every pass made 70,000 tokens take 3.8 s
# instead of 1.2 with passes of 1,000.
ROOTS_PER_READ = 50_000


def sweep_ahead(
    session_factory: Callable[[], Session], kind: str, value: str, *, reason: str, now: datetime
) -> int:
    """Revoke an identity's live tokens and their lineage in passes of their own, before
    the transaction that blocks it (:func:`revoke_by_operator` with ``swept``), which
    every exchange waits for while it walks. Without them, that transaction walked and
    revoked every live token the identity holds (70,000 tokens: 1.5 to 3 s on PostgreSQL,
    0.4 s on SQLite, with every exchange waiting); after them it has only what was
    exchanged meanwhile left to find. Returns how many tokens the passes revoked."""
    return sum(sweep_passes(session_factory, kind, value, reason=reason, now=now))


def sweep_passes(
    session_factory: Callable[[], Session], kind: str, value: str, *, reason: str, now: datetime
) -> Iterator[int]:
    """:func:`sweep_ahead`, a pass at a time: how many tokens each pass revoked.

    The identity's live tokens are read in pages of :data:`ROOTS_PER_READ`, in jti
    order (no writer waits for that); each pass then revokes up to
    :data:`ROOTS_PER_PASS` of them (:data:`SQLITE_ROOTS_PER_PASS` on SQLite), each with
    its whole lineage, in one write transaction, as :func:`revoke_token` revokes one:
    locked until stable on PostgreSQL (a re-exchange holds its parent row;
    queries.lock_lineage), so nothing below them is live when the pass commits, and
    nothing can be exchanged from them after. A token revoked since it was read is
    skipped. Passes do not hold the governance lock: exchanges of other identities go on
    (those presenting a token a pass is revoking wait for its row locks, then are
    refused). A pass that revoked anything leaves an audit record. Only tokens issued by
    ``now`` are read, each page past the last one's jtis, and a page shorter than
    :data:`ROOTS_PER_READ` is the last: the passes end even while the identity keeps
    exchanging. A pass that fails ends them too: they only lighten the transaction under
    the lock, which does not depend on them."""
    if kind not in SWEPT_AHEAD:
        return
    with session_factory() as session:  # the identity is looked up once, not per pass
        target = _target(session, kind, value)
        roots = _operator_roots(session, kind, target, ())
        is_sqlite = session.get_bind().dialect.name == "sqlite"
    per_pass = SQLITE_ROOTS_PER_PASS if is_sqlite else ROOTS_PER_PASS
    after: str | None = None
    while True:
        with session_factory() as session:
            page = queries.unrevoked_roots(session, roots, now, ROOTS_PER_READ, after)
        for start in range(0, len(page), per_pass):
            batch = page[start : start + per_pass]
            try:
                count = _revoke_a_pass(session_factory, kind, target, batch, reason, now)
            except (DBAPIError, queries.LineageUnstable) as exc:
                # Best effort: a pass that failed rolled back whole (no token of it
                # carries the mark), and the transaction under the lock, next, revokes
                # what the passes left. A pass's row locks can deadlock with an exchange
                # presenting two of the identity's tokens (subject and actor), which
                # PostgreSQL breaks by aborting one of the two.
                log.warning("a revocation pass ahead of the block failed: %s", type(exc).__name__)
                return
            yield count
        if len(page) < ROOTS_PER_READ:
            # What was left when this page was read: the identity's tokens issued since,
            # by a replica whose clock is behind, are few and left to the lock's walk.
            return
        after = page[-1]


def _revoke_a_pass(
    session_factory: Callable[[], Session],
    kind: str,
    target: str,
    batch: Sequence[str],
    reason: str,
    now: datetime,
) -> int:
    with write_transaction(session_factory) as session:
        # Tokens revoked since they were read are skipped (_revoke_where).
        count = queries.revoke_lineage(session, queries.tokens_in(batch), now)
        if count:
            record_revocation(
                session,
                now=now,
                reason=f"operator.revoke.{kind}.ahead",
                detail=f"{kind}={target!r}: revoked {count} token(s) ahead of the block: {reason}",
                decision="info",
            )
    return count


def _target(session: Session, kind: str, value: str) -> str:
    """The identity an operator named, as blocks and lineage rows name it; UnknownTarget
    if it is not on record (a client, an issuer by name; a credential's is raised by
    :func:`_operator_roots`, which looks it up)."""
    if kind == "issuer":
        return _issuer_url(session, value)
    if kind == "client" and queries.client_by_id(session, value) is None:
        raise UnknownTarget(f"no client {value!r}")
    return value


def _credential_id(session: Session, name: str) -> int:
    credential = queries.credential_by_name(session, name)
    if credential is None:
        raise UnknownTarget(f"no service credential named {name!r}")
    return credential.id


def _operator_roots(
    session: Session, kind: str, value: str, versions: Sequence[int]
) -> ColumnElement[bool]:
    """The tokens an operator's selector names (``value`` as :func:`_target` gives it)."""
    if kind == "rule":
        rule = queries.rule_by_name(session, value)
        if rule is None:
            raise UnknownTarget(f"no rule named {value!r} (a removed rule: --rule-id)")
        return queries.tokens_of_rule(rule.id, versions)
    if kind == "rule_id":  # a removed rule's too: its tokens still carry its id
        return queries.tokens_of_rule(int(value), versions)
    if kind == "credential":
        return queries.tokens_named("credential", _credential_id(session, value))
    return queries.tokens_named(kind, value)


def _record_operator_revocation(
    session: Session,
    kind: str,
    value: str,
    versions: Sequence[int],
    count: int,
    blocked: bool,
    reason: str,
    now: datetime,
    ahead: int | None = None,
) -> None:
    shown = f"{kind}={value!r}" + (f" versions={list(versions)}" if versions else "")
    revoked = f"revoked {count} token(s)"
    if ahead:
        revoked += f" ({ahead} of them ahead of the block)"
    record_revocation(
        session,
        now=now,
        reason=f"operator.revoke.{kind}",
        detail=f"{shown}: {revoked}{'; blocked' if blocked else ''}: {reason}",
        decision="info",
    )


def lift_by_operator(
    session: Session, kind: str, value: str, *, reason: str, now: datetime
) -> OperatorOutcome:
    """``sts revoke --lift``: allow new exchanges for the identity again (revoked tokens
    stay revoked). A credential is re-enabled."""
    if kind not in IDENTITY_KINDS:
        raise UnknownTarget(f"--lift applies to {', '.join(IDENTITY_KINDS)}, not {kind}")
    if kind == "credential":
        credential = queries.credential_by_name(session, value)
        if credential is None:
            raise UnknownTarget(f"no service credential named {value!r}")
        queries.set_credential_disabled(session, credential.id, False, now)
    value = _issuer_url(session, value) if kind == "issuer" else value
    if kind == "upstream_token":  # under every issuer, and under the one a report named
        blocks = queries.active_block_values(session, kind)
        values = [block for block in blocks if names_upstream_token(block, value)]
        lifted = sum(queries.lift_blocks(session, kind, block, now) for block in values)
    else:
        lifted = queries.lift_blocks(session, kind, value, now)
    if not lifted and kind != "credential":
        # A typo lifts nothing; said so, the operator does not walk away thinking the
        # identity is served again. (A credential's lift re-enables it, block or none.)
        raise UnknownTarget(f"no active block on {kind} {value!r} to lift")
    record_revocation(
        session,
        now=now,
        reason=f"operator.lift.{kind}",
        detail=f"{kind}={value!r}: lifted {lifted} block(s): {reason}",
        decision="info",
    )
    return OperatorOutcome(revoked=0, blocked=False, lifted=lifted)


def _issuer_url(session: Session, name_or_url: str) -> str:
    issuer = queries.trusted_issuer_by_name(session, name_or_url)
    if issuer is not None:
        return issuer.issuer
    if "://" in name_or_url:
        return name_or_url
    raise UnknownTarget(f"no trusted issuer named {name_or_url!r}")
