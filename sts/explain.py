"""``sts rules explain``: the same verification and evaluator as the exchange, issuing
nothing. For operators asking "why was this refused?" (or "what would this allow?")."""

from __future__ import annotations

from dataclasses import dataclass

from sts import errors
from sts.grants.token_exchange import present, resolve
from sts.policy.evaluate import Allow, Decision, ExchangeFacts, evaluate
from sts.services import Services
from sts.trust import ClientConfig


@dataclass(frozen=True)
class Explanation:
    decision: Decision | None
    refusal: errors.OAuthError | None  # the tokens themselves were refused
    client_requires_dpop: bool = False  # registered with dpop_bound_access_tokens

    def lines(self) -> list[str]:
        if self.refusal is not None:
            error = self.refusal
            return [
                f"decision: deny ({error.error}) before any rule: {error.description}",
                f"  reason: {error.reason}",
            ]
        decision = self.decision
        assert decision is not None
        out = []
        if isinstance(decision, Allow):
            out.append(
                f"decision: allow by rule {decision.rule.name} (id {decision.rule.id}, "
                f"version {decision.rule.version})"
            )
            out.append(f"  audiences: {' '.join(decision.audiences)}")
            out.append(f"  scopes: {' '.join(decision.scopes) or '(none)'}")
            out.append(f"  max ttl: {decision.max_ttl}s")
            grant = decision.rule.grant
            if grant is not None and grant.sender_constraint == "dpop":
                out.append("  sender constraint: a DPoP proof is required (RFC 9449)")
            elif self.client_requires_dpop:
                out.append(
                    "  sender constraint: a DPoP proof is required by the client's "
                    "registration (dpop_bound_access_tokens, RFC 9449 §5.2)"
                )
        else:
            rule = f" by rule {decision.rule.name}" if decision.rule else ""
            out.append(f"decision: deny ({decision.error}){rule}: {decision.reason}")
            if decision.rule is not None and decision.rule.invalid is not None:
                out.append(
                    f"  rule {decision.rule.name} does not compile ({decision.rule.invalid}): "
                    "a deny rule, it denies every exchange until fixed"
                )
        out.append("rules considered:")
        out.extend(f"  {name}: {why}" for name, why in decision.considered)
        if not decision.considered:
            out.append("  (none: no rule applies, deny by default)")
        return out

    @property
    def allowed(self) -> bool:
        return isinstance(self.decision, Allow)


def explain(
    services: Services,
    *,
    subject_token: str,
    subject_token_type: str,
    actor_token: str | None,
    actor_token_type: str | None,
    client_id: str | None,
    targets: tuple[str, ...],
    scopes: tuple[str, ...] | None,
) -> Explanation:
    now = services.clock()
    trust = services.trust.current()
    unusable = _unusable_client(trust.clients.get(client_id) if client_id else None, client_id)
    if unusable is not None:
        return Explanation(None, unusable)
    try:
        subject = present(services, trust, subject_token, subject_token_type, "subject", now)
        actor = (
            present(services, trust, actor_token, actor_token_type, "actor", now)
            if actor_token and actor_token_type
            else None
        )
        # Read only: the transaction is rolled back, nothing is recorded or issued.
        with services.exchange_store.read() as transaction:
            resolved_subject = resolve(transaction, subject, "subject", services.settings.issuer)
            resolved_actor = (
                resolve(transaction, actor, "actor", services.settings.issuer) if actor else None
            )
    except errors.OAuthError as refusal:
        return Explanation(None, refusal)
    facts = ExchangeFacts(
        subject=resolved_subject.facts,
        actor=resolved_actor.facts if resolved_actor else None,
        client_id=client_id,
        targets=targets,
        scopes=scopes,
    )
    return Explanation(
        evaluate(trust.rules, facts),
        None,
        client_requires_dpop=trust.client_requires_dpop(client_id),
    )


def _unusable_client(
    client: ClientConfig | None, client_id: str | None
) -> errors.OAuthError | None:
    """A client the token endpoint refuses before any token is looked at: unknown,
    disabled, or registered with keys that do not load (RFC 6749 §5.2 invalid_client).
    The endpoint answers all three alike (no client oracle); the operator is told which."""
    if client_id is None:
        return None
    if client is None:
        why = "is not registered"
    elif client.disabled:
        why = "is disabled"
    elif client.keys_invalid:
        why = "has a registered key set that does not load"
    else:
        return None
    return errors.InvalidClient(f"client {client_id!r} {why}", reason="client.rejected")
