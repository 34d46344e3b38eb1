"""The pure evaluator, table-driven: deny by default, deny wins, one rule grants all."""

from __future__ import annotations

from typing import Any

import pytest

from sts.policy.evaluate import Allow, Deny, ExchangeFacts, TokenFacts, evaluate, regrant
from sts.policy.rules import (
    CompiledRule,
    RuleError,
    compile_matcher,
    compile_rule,
    deny_everything,
)

DEPLOY = "https://deploy"
VAULT = "https://vault"


def rule(name: str, rule_id: int = 1, version: int = 1, **definition: Any) -> CompiledRule:
    definition.setdefault("subject_token", {"issuer": "ci"})
    if definition.get("effect", "allow") == "allow":
        definition.setdefault(
            "allow", {"audiences": [DEPLOY], "scopes": ["deploy:write"], "max_ttl": 300}
        )
    return compile_rule(rule_id, name, version, definition)


def ci_subject(sub: str = "repo:acme/app:ref:refs/heads/main", **claims: Any) -> TokenFacts:
    base = {"repository": "acme/app", "ref": "refs/heads/main"}
    base.update(claims)
    return TokenFacts("issuer", "ci", "https://ci", sub, base)


def facts(
    subject: TokenFacts | None = None,
    *,
    actor: TokenFacts | None = None,
    client: str | None = "ci-client",
    targets: tuple[str, ...] = (DEPLOY,),
    scopes: tuple[str, ...] | None = ("deploy:write",),
) -> ExchangeFacts:
    return ExchangeFacts(subject or ci_subject(), actor, client, targets, scopes)


AGENT = TokenFacts("issuer", "agents", "https://agents", "agent-7", {})

CASES: list[tuple[str, list[CompiledRule], ExchangeFacts, str]] = [
    ("no rules: deny by default", [], facts(), "invalid_request:no_matching_rule"),
    ("plain allow", [rule("r")], facts(), "allow:r"),
    (
        "wrong issuer",
        [rule("r", subject_token={"issuer": "gitlab"})],
        facts(),
        "invalid_request:no_matching_rule",
    ),
    (
        "subject glob matches",
        [rule("r", subject_token={"issuer": "ci", "subject": {"glob": "repo:acme/*"}})],
        facts(),
        "allow:r",
    ),
    (
        "subject glob is anchored",
        [rule("r", subject_token={"issuer": "ci", "subject": {"glob": "acme/*"}})],
        facts(),
        "invalid_request:no_matching_rule",
    ),
    (
        "claim equals",
        [rule("r", subject_token={"issuer": "ci", "claims": {"ref": "refs/heads/dev"}})],
        facts(),
        "invalid_request:no_matching_rule",
    ),
    (
        "claim one-of",
        [rule("r", subject_token={"issuer": "ci", "claims": {"ref": ["x", "refs/heads/main"]}})],
        facts(),
        "allow:r",
    ),
    (
        "a missing claim fails the condition",
        [rule("r", subject_token={"issuer": "ci", "claims": {"environment": "prod"}})],
        facts(),
        "invalid_request:no_matching_rule",
    ),
    (
        "a non-string claim never matches",
        [rule("r", subject_token={"issuer": "ci", "claims": {"ref": "1"}})],
        facts(ci_subject(ref=1)),
        "invalid_request:no_matching_rule",
    ),
    (
        "explicit deny wins over allow",
        [
            rule("allow-all"),
            rule(
                "deny-dev",
                effect="deny",
                subject_token={"issuer": "ci", "claims": {"ref": "refs/heads/main"}},
            ),
        ],
        facts(),
        "invalid_request:denied_by_rule",
    ),
    (
        "audience not granted",
        [rule("r")],
        facts(targets=(VAULT,)),
        "invalid_target:target: 'https://vault' not allowed by the rule",
    ),
    (
        "scope not granted",
        [rule("r")],
        facts(scopes=("admin",)),
        "invalid_scope:scope: 'admin' not allowed by the rule",
    ),
    (
        "no union across rules",
        [
            rule("a", allow={"audiences": [DEPLOY], "scopes": ["deploy:write"], "max_ttl": 60}),
            rule("b", allow={"audiences": [DEPLOY], "scopes": ["deploy:read"], "max_ttl": 60}),
        ],
        facts(scopes=("deploy:write", "deploy:read")),
        "invalid_scope:scope: 'deploy:read' not allowed by the rule",
    ),
    (
        "one audience per token unless allowed",
        [rule("r", allow={"audiences": [DEPLOY, VAULT], "max_ttl": 60})],
        facts(targets=(DEPLOY, VAULT), scopes=None),
        "invalid_target:target: more than 1 audience(s)",
    ),
    (
        "several audiences when the rule allows",
        [rule("r", allow={"audiences": [DEPLOY, VAULT], "max_ttl": 60, "max_audiences": 2})],
        facts(targets=(DEPLOY, VAULT), scopes=None),
        "allow:r",
    ),
    (
        "no audience requested and several possible",
        [rule("r", allow={"audiences": [DEPLOY, VAULT], "max_ttl": 60})],
        facts(targets=(), scopes=None),
        "invalid_target:target: an audience or resource is required",
    ),
    (
        "client not listed",
        [rule("r", clients=["other"])],
        facts(),
        "invalid_request:no_matching_rule",
    ),
    (
        "anonymous refused by default",
        [rule("r")],
        facts(client=None),
        "invalid_request:no_matching_rule",
    ),
    (
        "anonymous allowed by the rule",
        [rule("r", allow_unauthenticated=True)],
        facts(client=None),
        "allow:r",
    ),
    (
        "actor refused when the rule has no actor section",
        [rule("r")],
        facts(actor=AGENT),
        "invalid_request:no_matching_rule",
    ),
    (
        "actor required but absent",
        [rule("r", actor={"required": True, "issuer": "agents"})],
        facts(),
        "invalid_request:no_matching_rule",
    ),
    (
        "actor matches",
        [rule("r", actor={"required": True, "issuer": "agents", "subject": {"glob": "agent-*"}})],
        facts(actor=AGENT),
        "allow:r",
    ),
    (
        "actor subject mismatch",
        [rule("r", actor={"required": True, "issuer": "agents", "subject": "agent-1"})],
        facts(actor=AGENT),
        "invalid_request:no_matching_rule",
    ),
    (
        "chain depth capped",
        [rule("r", actor={"issuer": "agents", "max_chain_depth": 1})],
        facts(
            TokenFacts("issuer", "ci", "https://ci", "s", {"repository": "acme/app"}, act_depth=1),
            actor=AGENT,
        ),
        "invalid_request:no_matching_rule",
    ),
    (
        "may_act names someone else",
        [rule("r", actor={"issuer": "agents"})],
        facts(ci_subject(may_act={"sub": "agent-1"}), actor=AGENT),
        "invalid_request:may_act: the actor does not match may_act.sub",
    ),
    (
        "may_act names this actor",
        [rule("r", actor={"issuer": "agents"})],
        facts(ci_subject(may_act={"sub": "agent-7", "iss": "https://agents"}), actor=AGENT),
        "allow:r",
    ),
    (
        "may_act without iss names a party of the subject token's issuer, not this one",
        [rule("r", actor={"issuer": "agents"})],
        facts(ci_subject(may_act={"sub": "agent-7"}), actor=AGENT),
        "invalid_request:may_act: the actor does not match may_act.iss",
    ),
    (
        "... and that issuer's party matches it",
        [rule("r", actor={"issuer": "ci"})],
        facts(
            ci_subject(may_act={"sub": "agent-7"}),
            actor=TokenFacts("issuer", "ci", "https://ci", "agent-7", {}),
        ),
        "allow:r",
    ),
    (
        "a delegated subject token (act) is refused by a rule with no actor section",
        [rule("r")],
        facts(TokenFacts("issuer", "ci", "https://ci", "s", {}, act_depth=1)),
        "invalid_request:no_matching_rule",
    ),
    (
        "a token of this STS carries the chain sts made: re-exchanged without an actor",
        [rule("r", subject_token={"sts": True})],
        facts(
            TokenFacts(
                "sts",
                "sts",
                "https://sts",
                "s",
                {},
                1,
                audiences=(DEPLOY,),
                scopes=("deploy:write",),
            )
        ),
        "allow:r",
    ),
    (
        "... allowed by one with an actor section, within its depth, with no actor token",
        [rule("r", actor={"issuer": "agents", "max_chain_depth": 1})],
        facts(TokenFacts("issuer", "ci", "https://ci", "s", {}, act_depth=1)),
        "allow:r",
    ),
    (
        "... and its depth applies without an actor token too",
        [rule("r", actor={"issuer": "agents", "max_chain_depth": 1})],
        facts(TokenFacts("issuer", "ci", "https://ci", "s", {}, act_depth=2)),
        "invalid_request:no_matching_rule",
    ),
    (
        "an actor token that is itself delegated (act) is refused",
        [rule("r", actor={"issuer": "agents", "max_chain_depth": 5})],
        facts(actor=TokenFacts("issuer", "agents", "https://agents", "agent-7", {}, act_depth=1)),
        "invalid_request:actor: the actor token is itself delegated (act)",
    ),
]


# Deny rules against requests that carry less (no client authentication) or more (an actor
# token, a deeper act chain) than the allow rule they would otherwise pass: an allow rule
# that grants each of them, and a deny rule naming the subject.
OPEN = rule(
    "allow-open",
    allow_unauthenticated=True,
    actor={"issuer": "agents", "max_chain_depth": 3},
)
DENY_MAIN = rule(
    "deny-main", effect="deny", subject_token={"issuer": "ci", "claims": {"ref": "refs/heads/main"}}
)
DENY_PR = rule(
    "deny-pr",
    effect="deny",
    subject_token={"issuer": "ci", "claims": {"event_name": "pull_request"}},
)
DEEP = TokenFacts("issuer", "ci", "https://ci", "s", {"ref": "refs/heads/main"}, act_depth=2)
DENY_CASES: list[tuple[str, list[CompiledRule], ExchangeFacts, str]] = [
    ("the allow rule alone grants", [OPEN], facts(client=None, actor=AGENT), "allow:allow-open"),
    ("a deny rule covers an authenticated request", [OPEN, DENY_MAIN], facts(), "denied"),
    ("... and one with no client authentication", [OPEN, DENY_MAIN], facts(client=None), "denied"),
    ("... and one with an actor token", [OPEN, DENY_MAIN], facts(actor=AGENT), "denied"),
    ("... and one with a deeper act chain", [OPEN, DENY_MAIN], facts(DEEP, actor=AGENT), "denied"),
    (
        "a deny rule's clients narrow it to those clients",
        [OPEN, rule("deny-ci", effect="deny", clients=["other"])],
        facts(client=None),
        "allow:allow-open",
    ),
    (
        "... and cover them",
        [OPEN, rule("deny-ci", effect="deny", clients=["ci-client"])],
        facts(),
        "denied",
    ),
    (
        "a deny rule's actor narrows it to that actor",
        [OPEN, rule("deny-agent", effect="deny", actor={"required": True, "issuer": "agents"})],
        facts(),
        "allow:allow-open",
    ),
    (
        "... and covers it",
        [OPEN, rule("deny-agent", effect="deny", actor={"required": True, "issuer": "agents"})],
        facts(actor=AGENT),
        "denied",
    ),
    (
        "... but not another actor",
        [
            OPEN,
            rule(
                "deny-agent",
                effect="deny",
                actor={"required": True, "subject": "agent-1", "issuer": "agents"},
            ),
        ],
        facts(actor=AGENT),
        "allow:allow-open",
    ),
    (
        "a deny rule covers a claim it reads that is no string (it cannot compare it)",
        [OPEN, DENY_PR],
        facts(ci_subject(event_name=["pull_request"])),
        "denied",
    ),
    ("... but not a token without that claim", [OPEN, DENY_PR], facts(), "allow:allow-open"),
    (
        "... nor one whose claim does not match",
        [OPEN, DENY_PR],
        facts(ci_subject(event_name="push")),
        "allow:allow-open",
    ),
    (
        "a deny rule whose actor is optional covers requests without one",
        [OPEN, rule("deny-agent", effect="deny", actor={"issuer": "agents", "subject": "agent-1"})],
        facts(),
        "denied",
    ),
]


@pytest.mark.parametrize(
    ("rules", "request_facts", "expected"),
    [c[1:] for c in DENY_CASES],
    ids=[c[0] for c in DENY_CASES],
)
def test_an_explicit_deny_covers_every_request_its_conditions_describe(
    rules: list[CompiledRule], request_facts: ExchangeFacts, expected: str
) -> None:
    decision = evaluate(rules, request_facts)
    got = (
        "denied"
        if isinstance(decision, Deny) and decision.reason == "denied_by_rule"
        else outcome(decision)
    )
    assert got == expected


ALLOW_EACH_SOURCE = [
    rule("from-ci", rule_id=1, allow_unauthenticated=True),
    rule("from-key", rule_id=2, subject_token={"credential": "agent-key"}),
    rule("narrowing", rule_id=3, subject_token={"sts": True}, clients=["workload"]),
    rule(
        "delegated",
        rule_id=4,
        subject_token={"issuer": "agents"},
        actor={"required": True, "issuer": "agents"},
    ),
]
KEY = TokenFacts("credential", "agent-key", "https://sts", "team-alpha")
OWN = TokenFacts("sts", "sts", "https://sts", "repo:acme/app", audiences=(DEPLOY,))


@pytest.mark.parametrize(
    "request_facts",
    [
        facts(),
        facts(client=None),
        facts(KEY),
        facts(OWN, client="workload"),
        facts(AGENT, actor=AGENT),
        facts(actor=AGENT),
    ],
    ids=["issuer", "unauthenticated", "credential", "own-token", "with-actor", "unasked-actor"],
)
def test_a_deny_rule_standing_in_for_an_invalid_one_denies_every_request(
    request_facts: ExchangeFacts,
) -> None:
    """A stored deny rule that no longer compiles must not fail open: what stands in for
    it covers every request any allow rule could grant, under its id and name."""
    stand_in = deny_everything(9, "block-prs", 4, "description must be a string", ALLOW_EACH_SOURCE)
    assert {(r.id, r.name, r.version, r.effect) for r in stand_in} == {(9, "block-prs", 4, "deny")}
    assert all(r.invalid == "description must be a string" for r in stand_in)
    decision = evaluate([*ALLOW_EACH_SOURCE, *stand_in], request_facts)
    assert isinstance(decision, Deny) and decision.reason == "denied_by_rule", decision
    assert decision.rule is not None and decision.rule.name == "block-prs"
    assert decision.considered[-1] == ("block-prs", "matched: explicit deny")


def test_a_request_no_allow_rule_could_grant_is_still_refused_by_default() -> None:
    stand_in = deny_everything(9, "block-prs", 4, "invalid", [rule("from-ci")])
    other = TokenFacts("issuer", "gitlab", "https://gitlab", "repo", {})
    assert outcome(evaluate([rule("from-ci"), *stand_in], facts(other))) == (
        "invalid_request:no_matching_rule"
    )


def outcome(decision: Allow | Deny) -> str:
    if isinstance(decision, Allow):
        return f"allow:{decision.rule.name}"
    return f"{decision.error}:{decision.reason}"


@pytest.mark.parametrize(
    ("rules", "request_facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_evaluate(rules: list[CompiledRule], request_facts: ExchangeFacts, expected: str) -> None:
    assert outcome(evaluate(rules, request_facts)) == expected


def test_default_scopes_never_all_allowed() -> None:
    decision = evaluate(
        [
            rule(
                "r",
                allow={
                    "audiences": [DEPLOY],
                    "scopes": ["a", "b"],
                    "default_scopes": ["a"],
                    "max_ttl": 60,
                },
            )
        ],
        facts(scopes=None),
    )
    assert isinstance(decision, Allow)
    assert decision.scopes == ("a",)
    decision = evaluate(
        [rule("r", allow={"audiences": [DEPLOY], "scopes": ["a"], "max_ttl": 60})],
        facts(scopes=None),
    )
    assert isinstance(decision, Allow)
    assert decision.scopes == ()


def test_own_token_can_only_narrow() -> None:
    parent = TokenFacts(
        "sts", "sts", "https://sts", "w", {}, audiences=(DEPLOY,), scopes=("deploy:read",)
    )
    rules = [
        rule(
            "r",
            subject_token={"sts": True},
            allow={
                "audiences": [DEPLOY, VAULT],
                "scopes": ["deploy:read", "deploy:write"],
                "max_ttl": 60,
            },
        )
    ]
    assert outcome(evaluate(rules, facts(parent, scopes=("deploy:read",)))) == "allow:r"
    assert outcome(evaluate(rules, facts(parent, scopes=("deploy:write",)))) == (
        "invalid_scope:scope: 'deploy:write' not in the subject token's scope"
    )
    assert outcome(evaluate(rules, facts(parent, targets=(VAULT,), scopes=None))) == (
        "invalid_target:target: 'https://vault' not allowed by the subject token"
    )
    # With no audience requested, the default is what both the rule and the parent allow.
    decision = evaluate(rules, facts(parent, targets=(), scopes=None))
    assert isinstance(decision, Allow)
    assert decision.audiences == (DEPLOY,)


def test_considered_lists_each_rule_and_its_failed_condition() -> None:
    rules = [rule("a", subject_token={"issuer": "gitlab"}), rule("b", clients=["x"])]
    decision = evaluate(rules, facts())
    assert isinstance(decision, Deny)
    assert dict(decision.considered) == {
        "a": "subject: from issuer 'ci', rule wants issuer 'gitlab'",
        "b": "client: 'ci-client' not in ['x']",
    }


COMPILE_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown key",
        {
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1},
            "bogus": 1,
        },
        "rule: unknown key(s) bogus",
    ),
    (
        "no source",
        {"subject_token": {"subject": "x"}, "allow": {"audiences": ["a"], "max_ttl": 1}},
        "subject_token needs exactly one of issuer, credential, sts",
    ),
    (
        "two sources",
        {
            "subject_token": {"issuer": "a", "credential": "b"},
            "allow": {"audiences": ["a"], "max_ttl": 1},
        },
        "subject_token needs exactly one of",
    ),
    (
        "no audience",
        {"subject_token": {"issuer": "ci"}, "allow": {"audiences": [], "max_ttl": 1}},
        "allow.audiences must name at least one audience",
    ),
    (
        "bad ttl",
        {"subject_token": {"issuer": "ci"}, "allow": {"audiences": ["a"], "max_ttl": 0}},
        "allow.max_ttl must be a positive",
    ),
    (
        "copy reserved",
        {
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1, "copy_claims": ["sub"]},
        },
        "allow.copy_claims cannot copy sub",
    ),
    (
        "copy all",
        {
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1, "copy_claims": ["*"]},
        },
        "allow.copy_claims must list claims by name",
    ),
    (
        "defaults outside scopes",
        {
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1, "default_scopes": ["x"]},
        },
        "allow.default_scopes must be a subset",
    ),
    (
        "bad scope token",
        {
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1, "scopes": ['a"b']},
        },
        "is not a valid scope token",
    ),
    (
        "a description that is not text",
        {"description": 20240101, "subject_token": {"issuer": "ci"}, "effect": "deny"},
        "description must be a string (quote it)",
    ),
    (
        "deny with allow",
        {
            "effect": "deny",
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1},
        },
        "a deny rule has no allow section",
    ),
    (
        "bad matcher",
        {
            "subject_token": {"issuer": "ci", "subject": {"regex": ".*"}},
            "allow": {"audiences": ["a"], "max_ttl": 1},
        },
        "subject_token.subject must be a string",
    ),
    (
        "bad depth",
        {
            "subject_token": {"issuer": "ci"},
            "actor": {"max_chain_depth": 0},
            "allow": {"audiences": ["a"], "max_ttl": 1},
        },
        "actor.max_chain_depth must be",
    ),
    (
        "unknown sender constraint",
        {
            "subject_token": {"issuer": "ci"},
            "allow": {"audiences": ["a"], "max_ttl": 1, "sender_constraint": "mtls"},
        },
        'allow.sender_constraint must be "dpop"',
    ),
]


@pytest.mark.parametrize(
    ("definition", "message"), [c[1:] for c in COMPILE_ERRORS], ids=[c[0] for c in COMPILE_ERRORS]
)
def test_compile_refuses(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(
        RuleError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")
    ):
        compile_rule(1, "r", 1, definition)


def test_matchers() -> None:
    assert compile_matcher("a", "m").matches("a")
    assert not compile_matcher("a*", "m").matches("abc")  # a plain string is never a glob
    assert compile_matcher({"glob": "refs/heads/*"}, "m").matches("refs/heads/main")
    assert not compile_matcher({"glob": "refs/heads/*"}, "m").matches("xrefs/heads/main")
    assert compile_matcher(["a", "b"], "m").matches("b")
    assert not compile_matcher(["a", "b"], "m").matches(["a"])


def test_a_rule_may_require_dpop_and_regrant_checks_it_after_issuance() -> None:
    """``allow.sender_constraint: dpop`` (RFC 9449): introspection's post-issuance check
    ends a token that is not bound to a key once its rule asks for one."""
    definition = {
        "subject_token": {"issuer": "ci"},
        "allow": {"audiences": ["a"], "max_ttl": 1, "sender_constraint": "dpop"},
    }
    rule = compile_rule(1, "r", 1, definition)
    assert rule.grant is not None and rule.grant.sender_constraint == "dpop"
    assert isinstance(regrant(rule, ["a"], [], bound=True), Allow)
    refused = regrant(rule, ["a"], [], bound=False)
    assert isinstance(refused, Deny) and "DPoP" in refused.reason
    optional = compile_rule(2, "o", 1, {**definition, "allow": {"audiences": ["a"], "max_ttl": 1}})
    assert optional.grant is not None and optional.grant.sender_constraint is None
    assert isinstance(regrant(optional, ["a"], [], bound=False), Allow)


def test_withdrawn_says_why_current_rules_no_longer_grant_an_issued_token() -> None:
    from sts.policy.evaluate import withdrawn

    current = rule("r", rule_id=7, version=3)
    dpop = rule(
        "d",
        rule_id=8,
        allow={"audiences": [DEPLOY], "max_ttl": 60, "sender_constraint": "dpop"},
    )
    rules = [current, dpop]
    assert withdrawn(rules, 7, [DEPLOY], ["deploy:write"], bound=False) is None
    assert withdrawn(rules, 9, [DEPLOY], [], bound=False) == "rule: removed"
    assert withdrawn(rules, 7, [VAULT], [], bound=False) == (
        "rule r@3: target: 'https://vault' not allowed by the rule"
    )
    assert withdrawn(rules, 7, [DEPLOY], ["admin"], bound=False) == (
        "rule r@3: scope: 'admin' not allowed by the rule"
    )
    assert withdrawn(rules, 8, [DEPLOY], [], bound=False) == (
        "rule d@1: rule: now requires a DPoP-bound token"
    )
    assert withdrawn(rules, 8, [DEPLOY], [], bound=True) is None
