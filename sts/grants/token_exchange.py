"""The RFC 8693 token exchange grant, as numbered steps.

1. parse the request once (``protocol.exchange``);
2. authenticate the client (``client_auth``), and check its DPoP proof if it sent one
   (RFC 9449 §4.3, ``sts.tokens.dpop``);
3. verify the subject and actor tokens: signature, issuer, audience, times (no I/O but
   a cached issuer JWKS); a token bound to a key (``cnf``) needs a proof by that key;
4. in ONE database transaction (``sts.db.exchange_store``): resolve what only the database
   knows (credential, lineage and revocation of a parent), evaluate the rules (pure),
   build the claims (pure), claim a status-list index, and record the DPoP proof's jti,
   then the lineage and audit rows unless the proof had been used or an identity involved
   or the signing key is blocked (on PostgreSQL the proof, the check and both rows are
   one statement, sent with the COMMIT); commit; refuse if the proof had been used or a
   block was found (then nothing was recorded for the token);
5. sign, outside the transaction (and the SQLite write lock), and only then respond.

Every refusal is recorded too, with its private reason; the caller sees only the RFC
error code and a description that does not reveal the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from sts import errors
from sts.audit import AuditEntry, storable_text
from sts.credentials import looks_like_api_key, parse_api_key, secret_matches
from sts.db.exchange_store import Blocks, ExchangeTransaction
from sts.db.queries import SPENT_PROOF
from sts.endpoints import NO_STORE, Response
from sts.endpoints.metadata import TOKEN_PATH
from sts.grants.client_auth import AuthenticatedClient, authenticate_client
from sts.policy.evaluate import Allow, Deny, ExchangeFacts, TokenFacts, evaluate, withdrawn
from sts.protocol import (
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_API_KEY,
    TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT,
)
from sts.protocol.exchange import TokenExchangeRequest, parse_token_exchange_request
from sts.revocation import exchange_identities, refuse_if_blocked, upstream_token_block_names
from sts.services import Services
from sts.status_list import TokenStatus, allocate_token_status
from sts.tokens.claims import (
    act_depth,
    actor_claim,
    build_claims,
    compute_lifetime,
    new_token_id,
)
from sts.tokens.dpop import DpopProof, dpop_key, require_possession, verify_dpop_proof
from sts.tokens.mint import mint_access_token
from sts.tokens.verify import VerifiedJwt, refuse
from sts.trust import TrustConfig

log = logging.getLogger(__name__)

# Which declared token types are consistent with what the token turned out to be.
TYPES_FOR_KIND = {
    "issuer": (TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN),
    "sts": (TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT),
    "credential": (TOKEN_TYPE_API_KEY,),
}
DENY_ERRORS: dict[str, type[errors.OAuthError]] = {
    "invalid_request": errors.InvalidRequest,
    "invalid_target": errors.InvalidTarget,
    "invalid_scope": errors.InvalidScope,
}
DENY_DESCRIPTIONS = {
    "invalid_request": "No rule allows this exchange.",
    "invalid_target": "The requested audience or resource is not allowed.",
    "invalid_scope": "The requested scope is not allowed.",
}


@dataclass(frozen=True)
class Granted:
    """What the exchange's transaction decided and recorded: the claims to sign."""

    claims: dict[str, Any]
    decision: Allow
    lifetime: int  # seconds
    blocks: Blocks  # found by the check that guarded the records: read after COMMIT


@dataclass(frozen=True)
class PresentedApiKey:
    key: str
    key_id: str


Presented = VerifiedJwt | PresentedApiKey


@dataclass(frozen=True)
class Resolved:
    """A token after the database has had its say."""

    facts: TokenFacts
    token_id: str
    expires_at: datetime | None
    act: Mapping[str, Any] | None
    parent_jti: str | None = None
    credential_id: int | None = None


def exchange(
    services: Services,
    form: Sequence[tuple[str, str]],
    authorization: str | None,
    dpop: str | None = None,
) -> Response:
    now = services.clock()
    entry = AuditEntry(at=now)
    client: AuthenticatedClient | None = None
    proof: DpopProof | None = None
    progress = _Progress()
    try:
        request = parse_token_exchange_request(form)
        entry.requested_audiences = list(request.targets)
        entry.requested_scope = " ".join(request.scopes) if request.scopes is not None else None
        trust = services.trust.current()
        settings = services.settings
        # The public URI (behind a proxy, the one the caller used): the audience of a
        # client assertion (RFC 7523 §3) and a DPoP proof's htu (RFC 9449 §4.3).
        token_endpoint = settings.issuer + TOKEN_PATH
        client = authenticate_client(
            request.client,
            authorization,
            trust.clients,
            token_endpoint=token_endpoint,
            issuer=settings.issuer,
            leeway=settings.clock_leeway,
            now=now,
        )
        entry.client_id = client.client_id
        if dpop is not None:
            proof = verify_dpop_proof(
                dpop,
                method="POST",
                uri=token_endpoint,
                now=now,
                max_age=settings.dpop_proof_max_age,
                leeway=settings.clock_leeway,
                nonces=services.dpop_nonces,
            )
        elif trust.client_requires_dpop(client.client_id or request.client.client_id):
            # RFC 9449 §5.2: whatever the rule allows, this client's tokens are bound. A
            # public client (auth_method none) is not authenticated: the client_id it
            # names is trusted to narrow what it gets, never to widen it.
            raise errors.InvalidDpopProof(
                "This client must send a DPoP proof with every token request (RFC 9449 §5.2).",
                reason="client.dpop_required",
            )
        subject = present(
            services, trust, request.subject_token, request.subject_token_type, "subject", now
        )
        _note_subject(entry, subject)
        actor = None
        if request.actor_token is not None and request.actor_token_type is not None:
            actor = present(
                services, trust, request.actor_token, request.actor_token_type, "actor", now
            )
        for role, token in (("subject", subject), ("actor", actor)):
            if isinstance(token, VerifiedJwt):
                require_possession(role, token.claims, proof)
        return issue(services, trust, request, client, subject, actor, entry, now, proof, progress)
    except errors.OAuthError as error:
        answer = record_refusal(
            services, entry, error, client, proof, proof_spent=progress.committed
        )
        if answer is error:
            raise
        raise answer from None


@dataclass
class _Progress:
    """How far a request got: once its transaction has committed, its DPoP proof is spent,
    and a refusal after that (a block found with the records) must not take the proof's
    row for an earlier request's."""

    committed: bool = False


def present(
    services: Services, trust: TrustConfig, token: str, declared: str, role: str, now: datetime
) -> Presented:
    """Step 3: what is this token, really? Decided by verification, not by ``declared``."""
    if looks_like_api_key(token):
        key_id = parse_api_key(token)
        if key_id is None:
            raise refuse(role, "is not a valid service credential", "credential_malformed")
        if declared not in TYPES_FOR_KIND["credential"]:
            raise refuse(role, "does not match its declared token type", "type_mismatch")
        return PresentedApiKey(token, key_id)
    if declared == TOKEN_TYPE_API_KEY:
        raise refuse(role, "is not a valid service credential", "credential_malformed")
    verified = services.verify_jwt(token, role=role, now=now, trust=trust)
    if declared not in TYPES_FOR_KIND[verified.kind]:
        raise refuse(role, "does not match its declared token type", "type_mismatch")
    if verified.kind == "sts":
        refuse_if_withdrawn(verified, role, trust)
    return verified


def refuse_if_withdrawn(token: VerifiedJwt, role: str, trust: TrustConfig) -> None:
    """A token of this STS is exchanged only while introspection would call it active:
    its rule still exists and still grants its audiences and scopes (and a key binding,
    if the rule now asks for one). Narrowing a rule withdraws what its tokens held; a
    re-exchange must not hand it back in a new token. RFC 8693 §2.2.2: a token
    unacceptable based on policy is ``invalid_request``."""
    claims = token.claims
    aud, scope = claims.get("aud"), claims.get("scope")
    audiences = [str(a) for a in aud] if isinstance(aud, list) else [str(aud)]
    scopes = scope.split() if isinstance(scope, str) else []
    bound = dpop_key(claims) is not None
    reason = withdrawn(trust.rules, claims.get("sts_rule_id"), audiences, scopes, bound=bound)
    if reason is not None:
        raise refuse(role, "is no longer allowed by the rules", "withdrawn", detail=reason)


def issue(
    services: Services,
    trust: TrustConfig,
    request: TokenExchangeRequest,
    client: AuthenticatedClient,
    subject: Presented,
    actor: Presented | None,
    entry: AuditEntry,
    now: datetime,
    proof: DpopProof | None = None,
    progress: _Progress | None = None,
) -> Response:
    """Step 4: one transaction from the database checks to the committed records, then
    the signature."""
    settings = services.settings
    # The key ring may refresh (and run a due rotation step under its own write lock):
    # that must happen before this transaction takes the SQLite write gate, never inside.
    key = services.keyring.signing_key()
    presented_keys = presented_sts_keys(subject, actor)

    def decide_and_record(transaction: ExchangeTransaction) -> Granted:
        # Before every read (later statements): a compromise of ``key``, or a revocation of
        # an identity or credential this exchange involves, either commits first (and the
        # block check or the credential read sees it) or waits for this commit (and
        # revokes this token with the others).
        transaction.hold_governance_shared()
        if client.assertion_jti is not None:
            _record_assertion(transaction, client)
        # A DPoP proof is spent with the token's records (_record_issued): one statement
        # on PostgreSQL. Refused before then, it is spent by record_refusal.
        resolved_subject = resolve(transaction, subject, "subject", settings.issuer)
        _note_resolved_subject(entry, resolved_subject)
        resolved_actor = resolve(transaction, actor, "actor", settings.issuer) if actor else None
        if resolved_actor is not None:
            entry.actor = resolved_actor.facts.subject
        facts = ExchangeFacts(
            subject=resolved_subject.facts,
            actor=resolved_actor.facts if resolved_actor else None,
            client_id=client.client_id,
            targets=request.targets,
            scopes=request.scopes,
        )
        decision = evaluate(trust.rules, facts)
        if isinstance(decision, Deny):
            raise _deny_error(decision, entry)
        entry.rule_id, entry.rule_version = decision.rule.id, decision.rule.version
        _require_sender_constraint(decision, proof)
        lifetime = compute_lifetime(
            rule_max_ttl=decision.max_ttl,
            global_cap=settings.max_token_ttl,
            now=now,
            subject_expires_at=resolved_subject.expires_at,
            actor_expires_at=resolved_actor.expires_at if resolved_actor else None,
        )
        if lifetime.seconds < 1:
            raise errors.InvalidRequest(
                f"The {lifetime.limited_by.replace('_', ' ')} expires too soon.",
                reason=f"{lifetime.limited_by}.expires_too_soon",
            )
        act = (
            actor_claim(
                resolved_actor.facts.subject, resolved_actor.facts.issuer, resolved_subject.act
            )
            if resolved_actor
            else resolved_subject.act
        )
        status = allocate_token_status(transaction, settings.issuer, settings.status_list_size, now)
        claims = build_claims(
            issuer=settings.issuer,
            subject=resolved_subject.facts.subject,
            decision=decision,
            jti=new_token_id(now),
            now=now,
            lifetime=lifetime.seconds,
            client_id=client.client_id,
            act=act,
            subject_claims=resolved_subject.facts.claims,
            status=status.claim,
            # RFC 9449 §6.1: bound to the key that signed the proof (RFC 7800 ``cnf``).
            confirmation={"jkt": proof.jkt} if proof is not None else None,
        )
        identities = exchange_identities(
            client.client_id,
            facts.subject,
            facts.actor,
            signing_kid=key.kid,
            upstream_tokens=upstream_token_ids(resolved_subject, resolved_actor),
            dpop_key=proof.jkt if proof is not None else None,
            presented_kids=[kid for _role, kid in presented_keys],
        )
        blocks = _record_issued(
            transaction,
            decision,
            resolved_subject,
            resolved_actor,
            claims,
            key.kid,
            entry,
            now,
            status,
            identities=identities,
            proof=proof,
        )
        return Granted(claims, decision, lifetime.seconds, blocks)

    try:
        # Committed when this returns (with the writes of other threads of this process
        # that were ready at the same time, on SQLite: sts.db.group_commit).
        granted = services.exchange_store.run_write(decide_and_record)
        if progress is not None:
            progress.committed = True
        kinds = granted.blocks.kinds()
        if "key" in kinds:  # a key was marked compromised since the ring's read:
            services.keyring.expire()  # whatever this answer, the next exchange re-reads it
        if SPENT_PROOF in kinds:  # nothing was recorded: the proof had been used
            blocked = [kind for kind in kinds if kind != SPENT_PROOF]
            raise _replayed_proof(f"Also blocked: {', '.join(blocked)}" if blocked else None)
        refuse_if_signed_by_a_revoked_key(granted.blocks.found(), presented_keys)
        refuse_if_blocked(kinds)
    except SQLAlchemyError as exc:
        log.error("exchange refused: database error %s", type(exc).__name__)
        reason = "database.locked" if _write_lock_timed_out(exc) else "database.unavailable"
        raise errors.TemporarilyUnavailable(reason=reason) from None
    claims, decision = granted.claims, granted.decision
    jti = claims["jti"]
    # Signed once its lineage and audit rows are committed, and outside the SQLite write
    # lock (the signature needs nothing from the database). A failure here leaves a
    # lineage row for a token nobody holds, and a refusal in the audit log: nothing lost.
    try:
        access_token = mint_access_token(claims, key)
    except Exception as exc:
        log.error("exchange refused: signing jti=%s failed: %s", jti, type(exc).__name__)
        raise errors.TemporarilyUnavailable(reason="keys.sign_failed") from None
    log.debug("issued jti=%s rule=%s@%s", jti, decision.rule.name, decision.rule.version)
    # RFC 8693 §2.2.1
    body: dict[str, Any] = {
        "access_token": access_token,
        "issued_token_type": request.requested_token_type,
        # RFC 9449 §5: a token bound to a DPoP key is of type DPoP.
        "token_type": "DPoP" if proof is not None else "Bearer",
        "expires_in": granted.lifetime,
    }
    # Always sent when the token has scopes (REQUIRED where they differ from the request);
    # never as "": RFC 6749 §3.3 defines no empty scope, and a token without scopes was
    # asked for none (a requested scope is granted or the exchange refused).
    if decision.scopes:
        body["scope"] = " ".join(decision.scopes)
    headers = dict(NO_STORE)
    if proof is not None and services.dpop_nonces is not None:
        # RFC 9449 §8.2: the nonce for the caller's next proof, before this one goes stale.
        headers["DPoP-Nonce"] = services.dpop_nonces.current(now)
    return Response(200, body, headers)


def resolve(
    transaction: ExchangeTransaction, token: Presented, role: str, own_issuer: str
) -> Resolved:
    if isinstance(token, PresentedApiKey):
        credential = transaction.credential_by_key_id(token.key_id)
        if credential is None:
            raise refuse(role, "is not a valid service credential", "credential_unknown")
        credential_id, name, owner_subject, secret_hash, disabled = credential
        if not secret_matches(token.key, secret_hash):
            raise refuse(role, "is not a valid service credential", "credential_unknown")
        if disabled:
            raise refuse(role, "credential has been disabled", "credential_disabled")
        return Resolved(
            facts=TokenFacts(
                source="credential",
                source_name=name,
                issuer=own_issuer,
                subject=owner_subject,
            ),
            token_id=f"credential:{name}",
            expires_at=None,
            act=None,
            credential_id=credential_id,
        )
    claims = token.claims
    act = claims.get("act") if isinstance(claims.get("act"), Mapping) else None
    if token.kind == "sts":
        # Subject or actor alike: the row is held FOR SHARE until this exchange commits,
        # so a revocation of it racing this exchange waits, then finds the new token
        # along the edge recorded for ``role`` (``parent_jti`` or ``actor_parent_jti``,
        # sts.db.queries.lock_lineage), and revokes it too.
        known, revoked = transaction.parent_revocation_state(token.token_id)
        if not known:
            raise refuse(role, "is not known to this service", "unknown_jti")
        if revoked:
            raise refuse(role, "has been revoked", "revoked")
        scope = claims.get("scope")
        aud = claims.get("aud")
        return Resolved(
            facts=TokenFacts(
                source="sts",
                source_name="sts",
                issuer=own_issuer,
                subject=str(claims["sub"]),
                claims=claims,
                act_depth=act_depth(act),
                audiences=tuple(aud) if isinstance(aud, list) else (str(aud),),
                scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            ),
            token_id=token.token_id,
            expires_at=token.expires_at,
            act=act,
            parent_jti=token.token_id,
        )
    assert token.issuer is not None
    return Resolved(
        facts=TokenFacts(
            source="issuer",
            source_name=token.issuer.name,
            issuer=token.issuer.issuer,
            subject=str(claims["sub"]),
            claims=claims,
            act_depth=act_depth(act),
        ),
        token_id=token.token_id,
        expires_at=token.expires_at,
        act=act,
    )


def presented_sts_keys(subject: Presented, actor: Presented | None) -> list[tuple[str, str]]:
    """(role, kid) of each sts token presented: the keys its block check covers."""
    return [
        (role, str(token.header.get("kid")))
        for role, token in (("subject", subject), ("actor", actor))
        if isinstance(token, VerifiedJwt) and token.kind == "sts"
    ]


def refuse_if_signed_by_a_revoked_key(
    found: Sequence[tuple[str, str]], presented_keys: Sequence[tuple[str, str]]
) -> None:
    """A presented sts token (``presented_keys``: :func:`presented_sts_keys`) signed by a
    key marked compromised (``sts keys compromised``) is refused, as introspection calls
    it inactive: the key ring this process verified it with may not have been re-read
    since (RFC 8693 §2.2.2)."""
    revoked = {value for kind, value in found if kind == "key"}
    for role, kid in presented_keys:
        if kid in revoked:
            raise refuse(role, "was signed by a revoked key", "key_revoked")


def upstream_token_ids(*tokens: Resolved | None) -> list[str]:
    """The names of the upstream JWTs presented (subject, actor), as blocks give them
    (sts.revocation.upstream_token_block_names): the block check refuses one that has leaked
    (sts.revocation.revoke_upstream_token). sts tokens and service credentials need no
    block: they are revoked or disabled in their own rows."""
    return [
        name
        for token in tokens
        if token and token.facts.source == "issuer"
        for name in upstream_token_block_names(token.token_id, token.facts.issuer)
    ]


def _record_assertion(transaction: ExchangeTransaction, client: AuthenticatedClient) -> None:
    assert client.client_id and client.assertion_jti and client.assertion_expires_at
    if not transaction.record_client_assertion(
        client.client_id, client.assertion_jti, client.assertion_expires_at
    ):
        raise errors.InvalidClient("The client assertion was already used.", reason="client.replay")


def _replayed_proof(detail: str | None = None) -> errors.InvalidDpopProof:
    # RFC 9449 §11.1: a proof is used once (per key; the jti is the client's own).
    description = "The DPoP proof was already used."
    detail = f"{description} {detail}" if detail else None
    return errors.InvalidDpopProof(description, reason="dpop.replay", detail=detail)


def _require_sender_constraint(decision: Allow, proof: DpopProof | None) -> None:
    """The rule's ``allow.sender_constraint``: "dpop" issues only to the holder of a key."""
    grant = decision.rule.grant
    if grant is not None and grant.sender_constraint == "dpop" and proof is None:
        raise errors.InvalidDpopProof(
            "This exchange requires a DPoP proof (RFC 9449).", reason="policy.dpop_required"
        )


def _record_issued(
    transaction: ExchangeTransaction,
    decision: Allow,
    subject: Resolved,
    actor: Resolved | None,
    claims: dict[str, Any],
    kid: str,
    entry: AuditEntry,
    now: datetime,
    status: TokenStatus,
    *,
    identities: Sequence[tuple[str, str]],
    proof: DpopProof | None = None,
) -> Blocks:
    """Lineage and audit, in the exchange's transaction: no token without both, and
    neither while one of ``identities`` is blocked (the blocks found are returned), nor
    when ``proof`` had been spent (RFC 9449 §11.1; :data:`SPENT_PROOF` is returned).

    The lineage has two edges: the subject's (the sts token it was exchanged from, or
    the credential) and the actor's (the sts token or credential presented as
    ``actor_token``, and its issuer). RFC 8693 §4.1: the actor named in ``act`` is a
    party to the token, so revoking the actor's token, credential or issuer reaches it
    (``sts.db.queries._lineage``, ``TOKEN_SELECTORS``)."""
    act = claims.get("act")
    lineage = {
        "jti": claims["jti"],
        "parent_jti": subject.parent_jti,
        "credential_id": subject.credential_id,
        "subject": claims["sub"],
        "subject_issuer": subject.facts.issuer,
        "subject_token_id": subject.token_id,
        "actor": act.get("sub") if isinstance(act, dict) else None,
        "actor_parent_jti": actor.parent_jti if actor else None,
        "actor_credential_id": actor.credential_id if actor else None,
        "actor_issuer": actor.facts.issuer if actor else None,
        "actor_token_id": actor.token_id if actor else None,
        "client_id": claims.get("client_id"),
        "rule_id": decision.rule.id,
        "rule_version": decision.rule.version,
        "audience": list(decision.audiences),
        "scope": " ".join(decision.scopes),
        "kid": kid,
        "issued_at": now,
        "expires_at": datetime.fromtimestamp(claims["exp"], now.tzinfo),
        "status_list_id": status.list_id,
        "status_idx": status.idx,
        "dpop_jkt": proof.jkt if proof is not None else None,
    }
    # A new dict (not ``dataclasses.replace``: 1.5 µs against 4.5): ``entry`` itself is
    # left as it was, so if the commit fails the refusal is recorded from it, without
    # this jti.
    granted = entry.values()
    granted.update(decision="allow", reason="granted", issued_jti=claims["jti"])
    if proof is not None:  # which key the token is bound to (a public key's hash)
        granted["detail"] = f"dpop_jkt={proof.jkt}"
    spend = None
    if proof is not None:
        spend = {"jkt": proof.jkt, "jti": proof.jti, "expires_at": proof.expires_at}
    return transaction.record_unless_blocked(identities, lineage, granted, spend)


def _deny_error(decision: Deny, entry: AuditEntry) -> errors.OAuthError:
    if decision.rule is not None:
        entry.rule_id, entry.rule_version = decision.rule.id, decision.rule.version
    detail = "; ".join(f"{name}: {why}" for name, why in decision.considered) or decision.reason
    error_class = DENY_ERRORS[decision.error]
    return error_class(
        DENY_DESCRIPTIONS[decision.error], reason=f"policy.{decision.reason}", detail=detail
    )


def _note_subject(entry: AuditEntry, subject: Presented) -> None:
    if isinstance(subject, VerifiedJwt):
        entry.subject = str(subject.claims.get("sub"))
        entry.subject_issuer = str(subject.claims.get("iss"))
        entry.subject_token_id = subject.token_id
    else:
        entry.subject_token_id = "credential-key:" + subject.key_id


def _note_resolved_subject(entry: AuditEntry, subject: Resolved) -> None:
    entry.subject = subject.facts.subject
    entry.subject_issuer = subject.facts.issuer
    entry.subject_token_id = subject.token_id


def _write_lock_timed_out(exc: SQLAlchemyError) -> bool:
    """SQLite's write lock (its busy timeout, or sts's write gate: sts.db.locks) was not
    free within the timeout."""
    return "database is locked" in str(getattr(exc, "orig", ""))


def record_refusal(
    services: Services,
    entry: AuditEntry,
    error: errors.OAuthError,
    client: AuthenticatedClient | None,
    proof: DpopProof | None = None,
    *,
    proof_spent: bool = False,
) -> errors.OAuthError:
    """Write the refusal's audit row in its own transaction; return the refusal to answer.
    Whether or not this write succeeds, no token is at stake; a failure is logged.

    A verified DPoP proof is spent here unless the exchange's own transaction spent it
    (``proof_spent``). If it had been spent already, the request was a replay (RFC 9449
    §11.1): that is what is recorded and answered, whatever else the rules or checks found
    wrong with it, so that such a replay shows as ``dpop.replay`` and a replayed proof
    cannot be used to learn what the rules would answer. Two refusals keep their answer
    and note the spent proof in their detail: a client that failed authentication (it
    is told that), and a database failure (the failed transaction may have committed this
    very proof before its acknowledgement was lost).

    Not when the write lock has just timed out: waiting for it again would double the
    caller's wait (another 10 s) for a write that would most likely time out as well. The
    log line below is then the only record."""
    answer = error
    entry.decision = "deny"
    entry.reason = error.reason
    detail = error.detail
    if proof is not None:  # which key was refused (a replay, a revoked key, ...)
        detail = f"{detail}; dpop_jkt={proof.jkt}"
    entry.detail = storable_text(detail)
    if error.reason == "database.locked":
        log.error("could not record refusal %s: the write lock is held", error.reason)
        _log_refusal(error, entry)
        return answer

    # RFC 9449 §8: ``use_dpop_nonce`` is a challenge, not a decision: the client is to send
    # the same request again with a proof carrying the nonce. Neither its proof (never
    # verified to the end) nor its client assertion (RFC 7523 §3) is spent by it, so the
    # retry may carry the same assertion; the retry spends it, whatever its answer.
    challenge = isinstance(error, errors.UseDpopNonce)

    def record(transaction: ExchangeTransaction) -> None:
        nonlocal answer
        if client is not None and client.assertion_jti is not None and not challenge:
            # Already recorded (False) means this request was the replay: nothing to add.
            assert client.client_id and client.assertion_expires_at
            transaction.record_client_assertion(
                client.client_id, client.assertion_jti, client.assertion_expires_at
            )
        if proof is not None and not proof_spent:  # spent whatever became of the request
            fresh = transaction.record_dpop_proof(proof.jkt, proof.jti, proof.expires_at)
            if not fresh and error.reason != "dpop.replay":
                answer = _answer_to_a_spent_proof(error, entry, detail, proof)
        transaction.record_audit(entry.values())

    try:
        services.exchange_store.run_write(record)
    except (SQLAlchemyError, UnicodeError) as exc:
        # UnicodeError: a value the driver cannot encode (neither driver wraps it). The
        # answer stays the refusal; it must never turn into a 500.
        log.error("could not record refusal %s: %s", error.reason, type(exc).__name__)
    _log_refusal(answer, entry)
    return answer


def _answer_to_a_spent_proof(
    error: errors.OAuthError, entry: AuditEntry, detail: str, proof: DpopProof
) -> errors.OAuthError:
    """The refusal's record found the request's DPoP proof spent already (record_refusal):
    a replay, answered as one, unless the client failed authentication or the database
    failed (then the row notes it; see record_refusal)."""
    if isinstance(error, errors.InvalidClient | errors.TemporarilyUnavailable):
        entry.detail = storable_text(f"{detail}; the DPoP proof's jti was on record")
        return error
    replay = _replayed_proof(f"Also {error.reason}: {error.detail}")
    entry.reason = replay.reason
    entry.detail = storable_text(f"{replay.detail}; dpop_jkt={proof.jkt}")
    return replay


def _log_refusal(error: errors.OAuthError, entry: AuditEntry) -> None:
    log.info(
        "refused token exchange: %s (%s) client=%s subject_token=%s",
        error.error,
        error.reason,
        entry.client_id,
        entry.subject_token_id,
    )
