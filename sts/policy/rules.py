"""Rule definitions, compiled and validated when they enter the system.

A definition is plain JSON (stored in ``rules.definition``)::

    {"effect": "allow",                                  # or "deny"
     "subject_token": {"issuer": "github-actions",       # exactly one of issuer | credential | sts
                       "subject": "repo:acme/payments:environment:production",
                       "claims": {"repository": "acme/payments",        # equals
                                  "ref": ["refs/heads/main"],           # one of
                                  "workflow": {"glob": "deploy-*"}}},   # glob (anchored)
     "clients": ["ci"],                 # absent: any authenticated client
     "allow_unauthenticated": false,    # true: no client authentication needed
     "actor": {"required": true, "issuer": "agents", "subject": {"glob": "agent-*"},
               "max_chain_depth": 1},    # absent: actor tokens are refused
     "allow": {"audiences": ["https://deploy.acme.internal"], "scopes": ["deploy:write"],
               "default_scopes": [], "max_ttl": 300, "copy_claims": ["repository", "sha"],
               "max_audiences": 1, "sender_constraint": "dpop"}}   # dpop: RFC 9449, optional
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Claims the issued token sets itself; a rule can never copy these from the subject token.
RESERVED_CLAIMS = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "nbf",
        "iat",
        "jti",
        "client_id",
        "scope",
        "act",
        "may_act",
        "cnf",
        "status",
        "sts_rule_id",
        "sts_rule_version",
    }
)
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 §3.3 scope-token
SOURCE_KEYS = ("issuer", "credential", "sts")
SENDER_CONSTRAINTS = (None, "dpop")  # RFC 9449


class RuleError(ValueError):
    """A rule definition is invalid. The message names the field."""


@dataclass(frozen=True)
class Matcher:
    """equals | one_of | glob. Globs are anchored (the whole value must match)."""

    kind: Literal["equals", "one_of", "glob"]
    values: tuple[str, ...]

    def matches(self, value: object) -> bool:
        if not isinstance(value, str):
            return False  # a non-string claim never matches: deny rather than guess
        if self.kind == "glob":
            return fnmatch.fnmatchcase(value, self.values[0])
        return value in self.values

    def describe(self) -> str:
        if self.kind == "glob":
            return f"glob {self.values[0]!r}"
        if self.kind == "equals":
            return f"equals {self.values[0]!r}"
        return f"one of {list(self.values)!r}"


@dataclass(frozen=True)
class TokenCondition:
    """Conditions on one token (the subject token, or the actor token)."""

    source: Literal["issuer", "credential", "sts"]
    source_name: str  # issuer name, credential name, or "sts"
    subject: Matcher | None
    claims: tuple[tuple[str, Matcher], ...]


@dataclass(frozen=True)
class ActorCondition:
    required: bool
    token: TokenCondition | None  # None: any verified actor
    max_chain_depth: int


@dataclass(frozen=True)
class Grant:
    audiences: tuple[str, ...]
    scopes: tuple[str, ...]
    default_scopes: tuple[str, ...]
    max_ttl: int
    copy_claims: tuple[str, ...]
    max_audiences: int
    # "dpop": the token is issued only to the holder of a key, proven by a DPoP proof
    # (RFC 9449), and bound to it (``cnf.jkt``). None: a proof is optional (a token is
    # bound whenever the request carries one).
    sender_constraint: str | None = None


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    version: int
    effect: Literal["allow", "deny"]
    subject: TokenCondition
    clients: tuple[str, ...] | None
    allow_unauthenticated: bool
    actor: ActorCondition | None
    grant: Grant | None  # None for deny rules
    # Set on a stand-in for a stored deny rule that no longer compiles (why it does not):
    # see :func:`deny_everything`.
    invalid: str | None = None


def compile_rule(
    rule_id: int, name: str, version: int, definition: Mapping[str, Any]
) -> CompiledRule:
    """Validate and compile one definition. Raises :class:`RuleError` naming the field."""
    _only_keys(
        definition,
        {
            "effect",
            "subject_token",
            "clients",
            "allow_unauthenticated",
            "actor",
            "allow",
            "description",
        },
        "rule",
    )
    effect = definition.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise RuleError("effect must be 'allow' or 'deny'")
    if not isinstance(definition.get("description", ""), str):
        # YAML reads an unquoted date or number as one: stored as JSON, it must be text.
        raise RuleError("description must be a string (quote it)")
    if "subject_token" not in definition:
        raise RuleError("subject_token is required")
    subject = compile_token_condition(definition["subject_token"], "subject_token")
    clients = definition.get("clients")
    if clients is not None:
        clients = tuple(_string_list(clients, "clients", allow_empty=False))
    allow_unauthenticated = definition.get("allow_unauthenticated", False)
    if not isinstance(allow_unauthenticated, bool):
        raise RuleError("allow_unauthenticated must be true or false")
    actor = _compile_actor(definition["actor"]) if "actor" in definition else None
    grant = None
    if effect == "allow":
        if "allow" not in definition:
            raise RuleError("allow is required for an allow rule")
        grant = _compile_grant(definition["allow"])
    elif "allow" in definition:
        raise RuleError("a deny rule has no allow section")
    return CompiledRule(
        id=rule_id,
        name=name,
        version=version,
        effect=effect,
        subject=subject,
        clients=clients,
        allow_unauthenticated=allow_unauthenticated,
        actor=actor,
        grant=grant,
    )


def deny_everything(
    rule_id: int, name: str, version: int, why: str, allow_rules: Sequence[CompiledRule]
) -> tuple[CompiledRule, ...]:
    """What stands in for a stored deny rule that no longer compiles: deny rules, under
    its id and name, that together cover every request an allow rule could grant.

    Skipping it would fail open (what it denied, the allow rules grant again). A deny rule
    covers every request its conditions describe, and one it leaves out covers everyone
    (``deny_covers``); but a rule must name its subject token's source, and a request is
    granted only by an allow rule naming the same source. So one deny rule per source the
    allow rules name, with no other condition, covers all they could grant; a request
    from any other source is refused anyway (deny by default)."""
    sources = dict.fromkeys(
        (rule.subject.source, rule.subject.source_name)
        for rule in allow_rules
        if rule.effect == "allow"
    )
    return tuple(
        CompiledRule(
            id=rule_id,
            name=name,
            version=version,
            effect="deny",
            subject=TokenCondition(source, source_name, None, ()),
            clients=None,
            allow_unauthenticated=False,
            actor=None,
            grant=None,
            invalid=why,
        )
        for source, source_name in sources
    )


def compile_token_condition(spec: object, where: str) -> TokenCondition:
    if not isinstance(spec, Mapping):
        raise RuleError(f"{where} must be a mapping")
    _only_keys(spec, {*SOURCE_KEYS, "subject", "claims"}, where)
    sources = [key for key in SOURCE_KEYS if key in spec]
    if len(sources) != 1:
        raise RuleError(f"{where} needs exactly one of issuer, credential, sts")
    source = sources[0]
    if source == "sts":
        if spec["sts"] is not True:
            raise RuleError(f"{where}.sts must be true")
        source_name = "sts"
    else:
        source_name = spec[source]
        if not isinstance(source_name, str) or not source_name:
            raise RuleError(f"{where}.{source} must be a name")
    subject = compile_matcher(spec["subject"], f"{where}.subject") if "subject" in spec else None
    claims_spec = spec.get("claims", {})
    if not isinstance(claims_spec, Mapping):
        raise RuleError(f"{where}.claims must be a mapping of claim name to condition")
    claims = tuple(
        (str(claim), compile_matcher(condition, f"{where}.claims.{claim}"))
        for claim, condition in sorted(claims_spec.items())
    )
    return TokenCondition(source, source_name, subject, claims)  # type: ignore[arg-type]


def compile_matcher(spec: object, where: str) -> Matcher:
    if isinstance(spec, str):
        return Matcher("equals", (spec,))
    if isinstance(spec, list):
        return Matcher("one_of", tuple(_string_list(spec, where, allow_empty=False)))
    if isinstance(spec, Mapping) and len(spec) == 1:
        ((kind, value),) = spec.items()
        if kind == "glob" and isinstance(value, str) and value:
            if value.strip("*?") == "":
                pass  # a bare wildcard is legal here; the linter flags it
            return Matcher("glob", (value,))
        if kind == "one_of":
            return Matcher("one_of", tuple(_string_list(value, where, allow_empty=False)))
        if kind == "equals" and isinstance(value, str):
            return Matcher("equals", (value,))
    raise RuleError(f"{where} must be a string (equals), a list (one of), or {{glob: PATTERN}}")


def _compile_actor(spec: object) -> ActorCondition:
    if not isinstance(spec, Mapping):
        raise RuleError("actor must be a mapping")
    _only_keys(spec, {"required", *SOURCE_KEYS, "subject", "claims", "max_chain_depth"}, "actor")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise RuleError("actor.required must be true or false")
    depth = spec.get("max_chain_depth", 1)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 10:
        raise RuleError("actor.max_chain_depth must be a whole number from 1 to 10")
    token_spec = {k: v for k, v in spec.items() if k in (*SOURCE_KEYS, "subject", "claims")}
    token = compile_token_condition(token_spec, "actor") if token_spec else None
    return ActorCondition(required=required, token=token, max_chain_depth=depth)


def _compile_grant(spec: object) -> Grant:
    if not isinstance(spec, Mapping):
        raise RuleError("allow must be a mapping")
    _only_keys(
        spec,
        {
            "audiences",
            "scopes",
            "default_scopes",
            "max_ttl",
            "copy_claims",
            "max_audiences",
            "sender_constraint",
        },
        "allow",
    )
    audiences = tuple(_string_list(spec.get("audiences", []), "allow.audiences", allow_empty=True))
    if not audiences:
        raise RuleError("allow.audiences must name at least one audience")
    scopes = tuple(_string_list(spec.get("scopes", []), "allow.scopes", allow_empty=True))
    for scope in scopes:
        if not SCOPE_TOKEN.match(scope):
            raise RuleError(f"allow.scopes: {scope!r} is not a valid scope token (RFC 6749 §3.3)")
    defaults = tuple(
        _string_list(spec.get("default_scopes", []), "allow.default_scopes", allow_empty=True)
    )
    if not set(defaults) <= set(scopes):
        raise RuleError("allow.default_scopes must be a subset of allow.scopes")
    max_ttl = spec.get("max_ttl")
    if not isinstance(max_ttl, int) or isinstance(max_ttl, bool) or max_ttl <= 0:
        raise RuleError("allow.max_ttl must be a positive number of seconds")
    copy_claims = tuple(
        _string_list(spec.get("copy_claims", []), "allow.copy_claims", allow_empty=True)
    )
    reserved = sorted(set(copy_claims) & RESERVED_CLAIMS)
    if reserved:
        raise RuleError(f"allow.copy_claims cannot copy {', '.join(reserved)}: sts sets them")
    if "*" in copy_claims:
        raise RuleError("allow.copy_claims must list claims by name ('*' is not allowed)")
    max_audiences = spec.get("max_audiences", 1)
    if not isinstance(max_audiences, int) or isinstance(max_audiences, bool) or max_audiences < 1:
        raise RuleError("allow.max_audiences must be a positive whole number")
    sender_constraint = spec.get("sender_constraint")
    if sender_constraint not in SENDER_CONSTRAINTS:
        raise RuleError('allow.sender_constraint must be "dpop" (or left out)')
    return Grant(
        audiences, scopes, defaults, max_ttl, copy_claims, max_audiences, sender_constraint
    )


def _only_keys(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _string_list(value: object, where: str, *, allow_empty: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where} must be a list of non-empty strings")
    if not value and not allow_empty:
        raise RuleError(f"{where} must not be empty")
    return value


def rule_errors(name: str, definition: Mapping[str, Any]) -> list[RuleError]:
    """Every independent problem of a definition, section by section.

    :func:`compile_rule` stops at the first problem, which is right when a rule enters the
    system; a reviewer of a rules file wants all of them at once. Empty means it compiles.
    """
    messages: list[str] = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except RuleError as exc:
            if str(exc) not in messages:
                messages.append(str(exc))

    attempt(lambda: compile_rule(0, name, 0, definition))  # the first problem (or none)
    if not messages:
        return []
    effect = definition.get("effect", "allow")
    if "subject_token" in definition:
        attempt(lambda: compile_token_condition(definition["subject_token"], "subject_token"))
    if "clients" in definition:
        attempt(lambda: _string_list(definition["clients"], "clients", allow_empty=False))
    if "actor" in definition:
        attempt(lambda: _compile_actor(definition["actor"]))
    if effect == "allow" and "allow" in definition:
        attempt(lambda: _compile_grant(definition["allow"]))
    return [RuleError(message) for message in messages]
