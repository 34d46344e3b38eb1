"""``evaluate(rules, facts) -> Allow | Deny``: pure, deterministic, deny by default.

* Explicit deny rules are checked first and win.
* A request is allowed only if ONE allow rule grants everything requested (no union
  across rules). Rules are tried in name order; the first that grants all wins.
* A token of this STS can only be narrowed: targets within its audience, scopes within
  its scope (RFC 8693 §1: the new token is for a subset of what the old one allowed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sts.policy.rules import CompiledRule, Grant, TokenCondition

ErrorCode = Literal["invalid_request", "invalid_target", "invalid_scope"]
# When no rule grants, the refusal names the furthest stage some matching rule reached.
_ERROR_RANK: dict[ErrorCode, int] = {"invalid_request": 0, "invalid_target": 1, "invalid_scope": 2}


@dataclass(frozen=True)
class TokenFacts:
    """What was verified about a subject or actor token."""

    source: Literal["issuer", "credential", "sts"]
    source_name: str  # trusted issuer's name, credential's name, or "sts"
    issuer: str  # the iss URL (or sts's own issuer for credentials and own tokens)
    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    act_depth: int = 0  # how many actors the token's own act chain already holds
    audiences: tuple[str, ...] | None = None  # own tokens: what the parent allowed
    scopes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExchangeFacts:
    subject: TokenFacts
    actor: TokenFacts | None
    client_id: str | None  # None: no client authenticated
    targets: tuple[str, ...]  # audience and resource values, in request order
    scopes: tuple[str, ...] | None  # None: no scope parameter


@dataclass(frozen=True)
class Allow:
    rule: CompiledRule
    audiences: tuple[str, ...]
    scopes: tuple[str, ...]
    max_ttl: int
    copy_claims: tuple[str, ...]
    considered: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Deny:
    error: ErrorCode
    reason: str
    rule: CompiledRule | None = None
    considered: tuple[tuple[str, str], ...] = ()


Decision = Allow | Deny


def evaluate(rules: Sequence[CompiledRule], facts: ExchangeFacts) -> Decision:
    for check in (check_actor_token, check_may_act):
        failure = check(facts)
        if failure is not None:
            return Deny("invalid_request", failure)
    considered: list[tuple[str, str]] = []
    ordered = sorted(rules, key=lambda rule: rule.name)
    for rule in (r for r in ordered if r.effect == "deny"):
        failure = deny_covers(rule, facts)
        if failure is None:
            considered.append((rule.name, "matched: explicit deny"))
            return Deny("invalid_request", "denied_by_rule", rule, tuple(considered))
        considered.append((rule.name, failure))
    closest: tuple[ErrorCode, str] = ("invalid_request", "no_matching_rule")
    for rule in (r for r in ordered if r.effect == "allow"):
        failure = match(rule, facts)
        if failure is not None:
            considered.append((rule.name, failure))
            continue
        outcome = grant(rule, facts)
        if isinstance(outcome, Allow):
            considered.append((rule.name, "matched: grants the request"))
            return Allow(
                outcome.rule,
                outcome.audiences,
                outcome.scopes,
                outcome.max_ttl,
                outcome.copy_claims,
                tuple(considered),
            )
        considered.append((rule.name, outcome.reason))
        if _ERROR_RANK[outcome.error] > _ERROR_RANK[closest[0]]:
            closest = (outcome.error, outcome.reason)
    return Deny(closest[0], closest[1], None, tuple(considered))


def match(rule: CompiledRule, facts: ExchangeFacts) -> str | None:
    """None if the rule applies to this caller; else the first condition that failed."""
    failure = match_token(rule.subject, facts.subject, "subject")
    if failure is not None:
        return failure
    if facts.client_id is None:
        if not rule.allow_unauthenticated:
            return "client: authentication required"
    elif rule.clients is not None and facts.client_id not in rule.clients:
        return f"client: {facts.client_id!r} not in {list(rule.clients)!r}"
    return match_actor(rule, facts)


def deny_covers(rule: CompiledRule, facts: ExchangeFacts) -> str | None:
    """None if this deny rule covers the request; else the first condition that failed.

    A deny rule covers every request its conditions describe, and a condition it leaves
    out covers everyone: no ``clients`` is any caller, authenticated or not; no ``actor``
    is with or without an actor token, at any depth. The refusals an allow rule adds for
    what it leaves out (client authentication required, delegation refused, a chain too
    deep) would otherwise let a request escape a deny rule by carrying less (no client
    authentication) or more (an actor token): "Explicit deny rules win"."""
    failure = match_token(rule.subject, facts.subject, "subject", covering=True)
    if failure is not None:
        return failure
    if rule.clients is not None and facts.client_id not in rule.clients:
        return f"client: {facts.client_id!r} not in {list(rule.clients)!r}"
    condition, actor = rule.actor, facts.actor
    if condition is None:
        return None
    if actor is None:
        return "actor: an actor token is required" if condition.required else None
    if condition.token is not None:
        return match_token(condition.token, actor, "actor", covering=True)
    return None


def match_actor(rule: CompiledRule, facts: ExchangeFacts) -> str | None:
    """Delegation (RFC 8693 §4.1): an actor token, or an upstream subject token delegated
    by its issuer (its ``act``, which the issued token carries on as sts's own claim), is
    allowed only by a rule with an ``actor`` section, and only up to its
    ``max_chain_depth`` actors in all, with or without an actor token. A token of this
    STS carries the chain sts made under a rule that allowed it; re-exchanging it
    without an actor token adds no one."""
    actor = facts.actor
    depth = facts.subject.act_depth + (1 if actor is not None else 0)
    if rule.actor is None:
        if actor is not None:
            return "actor: this rule does not allow delegation"
        if depth and facts.subject.source == "issuer":
            return "subject: delegated by its issuer (act); this rule does not allow delegation"
        return None
    if actor is None:
        if rule.actor.required:
            return "actor: an actor token is required"
    elif rule.actor.token is not None:
        failure = match_token(rule.actor.token, actor, "actor")
        if failure is not None:
            return failure
    if depth > rule.actor.max_chain_depth:
        return f"actor: chain depth {depth} exceeds {rule.actor.max_chain_depth}"
    return None


def match_token(
    condition: TokenCondition, token: TokenFacts, role: str, *, covering: bool = False
) -> str | None:
    """None if ``token`` meets ``condition``; else the first part that failed.

    ``covering`` (a deny rule's conditions): a claim the condition reads that is there
    but is no string (a list, a number, an object) cannot be compared, so the deny rule
    covers it rather than let it pass (an allow rule never matches such a claim, but an
    allow rule that does not read that claim would grant it)."""
    if (condition.source, condition.source_name) != (token.source, token.source_name):
        wanted = f"{condition.source} {condition.source_name!r}"
        return f"{role}: from {token.source} {token.source_name!r}, rule wants {wanted}"
    if condition.subject is not None and not condition.subject.matches(token.subject):
        return f"{role}.sub: {token.subject!r} does not match {condition.subject.describe()}"
    for claim, matcher in condition.claims:
        if claim not in token.claims:
            # The absence of a claim the rule reads is a failure, never a pass.
            return f"{role}.{claim}: claim missing"
        value = token.claims[claim]
        if covering and not isinstance(value, str):
            continue
        if not matcher.matches(value):
            return f"{role}.{claim}: {value!r} does not match {matcher.describe()}"
    return None


def check_may_act(facts: ExchangeFacts) -> str | None:
    """RFC 8693 §4.4: when the subject token names who may act for it, the actor must be
    that party: every member of ``may_act`` identifies the actor and must match. Without
    an ``iss`` member, the party is one of the subject token's issuer: a ``sub`` is unique
    only in its issuer's context (RFC 7519 §4.1.2), so the same ``sub`` from another
    trusted issuer is another party."""
    may_act = facts.subject.claims.get("may_act")
    if may_act is None or facts.actor is None:
        return None
    if not isinstance(may_act, Mapping) or not may_act:
        return "may_act: malformed claim in the subject token"
    actor_identity = {"sub": facts.actor.subject, "iss": facts.actor.issuer}
    for name, value in {**may_act, "iss": may_act.get("iss", facts.subject.issuer)}.items():
        if actor_identity.get(name, facts.actor.claims.get(name)) != value:
            return f"may_act: the actor does not match may_act.{name}"
    return None


def check_actor_token(facts: ExchangeFacts) -> str | None:
    """An actor token that is itself delegated (it carries ``act``) names two parties:
    the one it was issued to and the one acting for it. RFC 8693 §4.1 nests prior actors
    of the *subject* under the current actor; it does not say how to merge an actor's own
    chain, and keeping only its ``sub`` would hide who acts. Such a token is refused:
    the actor presents a token of its own."""
    if facts.actor is not None and facts.actor.act_depth:
        return "actor: the actor token is itself delegated (act)"
    return None


def grant(rule: CompiledRule, facts: ExchangeFacts) -> Allow | Deny:
    """Does this (matching) rule grant every requested target and scope?"""
    assert rule.grant is not None
    targets = _grant_targets(rule.grant, facts)
    if isinstance(targets, Deny):
        return Deny(targets.error, targets.reason, rule)
    scopes = _grant_scopes(rule.grant, facts)
    if isinstance(scopes, Deny):
        return Deny(scopes.error, scopes.reason, rule)
    return Allow(rule, targets, scopes, rule.grant.max_ttl, rule.grant.copy_claims)


def _grant_targets(grant_: Grant, facts: ExchangeFacts) -> tuple[str, ...] | Deny:
    parent = facts.subject.audiences  # own tokens: the new token stays within the parent
    allowed = [a for a in grant_.audiences if parent is None or a in parent]
    requested = tuple(dict.fromkeys(facts.targets))  # de-duplicated, order kept
    if not requested:
        if len(allowed) == 1:
            return (allowed[0],)
        return Deny("invalid_target", "target: an audience or resource is required")
    for target in requested:
        if target not in grant_.audiences:
            return Deny("invalid_target", f"target: {target!r} not allowed by the rule")
        if parent is not None and target not in parent:
            return Deny("invalid_target", f"target: {target!r} not allowed by the subject token")
    if len(requested) > grant_.max_audiences:
        return Deny("invalid_target", f"target: more than {grant_.max_audiences} audience(s)")
    return requested


def _grant_scopes(grant_: Grant, facts: ExchangeFacts) -> tuple[str, ...] | Deny:
    parent = facts.subject.scopes
    if facts.scopes is None:
        # No scope requested: the rule's defaults (maybe none), never "everything".
        return tuple(s for s in grant_.default_scopes if parent is None or s in parent)
    for scope in facts.scopes:
        if scope not in grant_.scopes:
            return Deny("invalid_scope", f"scope: {scope!r} not allowed by the rule")
        if parent is not None and scope not in parent:
            return Deny("invalid_scope", f"scope: {scope!r} not in the subject token's scope")
    return tuple(dict.fromkeys(facts.scopes))


def withdrawn(
    rules: Sequence[CompiledRule],
    rule_id: object,
    audiences: Sequence[str],
    scopes: Sequence[str],
    *,
    bound: bool,
) -> str | None:
    """Why the rules as they stand no longer grant a token this STS issued under rule
    ``rule_id`` (its ``sts_rule_id``), or None if they still do: the rule was removed,
    or :func:`regrant` refuses. Introspection calls such a token inactive (RFC 7662
    §2.2), and an exchange refuses it as subject or actor token (RFC 8693 §2.2.2)."""
    rule = next((r for r in rules if r.id == rule_id), None)
    if rule is None:
        return "rule: removed"
    decision = regrant(rule, audiences, scopes, bound=bound)
    if isinstance(decision, Deny):
        return f"rule {rule.name}@{rule.version}: {decision.reason}"
    return None


def regrant(
    rule: CompiledRule, audiences: Sequence[str], scopes: Sequence[str], *, bound: bool = False
) -> Allow | Deny:
    """Post-issuance check (RFC 7662 introspection): would ``rule``, as it stands now,
    still grant an issued token's audiences and scopes, and is the token bound to a key
    (``bound``: a ``cnf.jkt``) if the rule now asks for that? Only the grant step is
    re-run; the facts the rule matched at issuance (the subject token) are not kept."""
    if rule.effect != "allow" or rule.grant is None:
        return Deny("invalid_request", "rule: no longer an allow rule", rule)
    if rule.grant.sender_constraint == "dpop" and not bound:
        return Deny("invalid_request", "rule: now requires a DPoP-bound token", rule)
    issued = TokenFacts(source="sts", source_name="sts", issuer="", subject="")
    facts = ExchangeFacts(
        subject=issued,
        actor=None,
        client_id=None,
        targets=tuple(audiences),
        scopes=tuple(scopes),
    )
    return grant(rule, facts)
