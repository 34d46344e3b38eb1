"""Who acted, as the issued token's ``act`` says it (RFC 8693 §4.1, §4.4), through the app
on SQLite and PostgreSQL: an actor token that is itself delegated is refused (its own
chain would be lost); a subject token delegated by its upstream issuer is exchanged only
under a rule that allows delegation, within its ``max_chain_depth``; a ``may_act``
without ``iss`` names a party of the subject token's issuer, and the issued token says
which."""

from __future__ import annotations

from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN
from tests.integration.test_actor_lineage import STS_ACTOR_RULE, access_token, delegated
from tests.integration.world import CI_SUBJECT, DEPLOY, RULES, VAULT, World, claims_of

CI_ISSUER = "https://ci.issuer.test"


def last_reason(world: World) -> str:
    return str(world.audit_rows()[-1]["reason"])


def test_an_actor_token_that_is_itself_delegated_is_refused(world: World) -> None:
    actor, token = delegated(world)  # token: minted for the CI job with actor acting
    assert "act" in claims_of(token)

    def exchange_acted_by(actor_token: str) -> object:
        return world.exchange(
            world.ci_token(),
            audience=VAULT,
            scope="secrets:read",
            actor_token=actor_token,
            actor_token_type=TOKEN_TYPE_ACCESS_TOKEN,
        )

    refused = exchange_acted_by(token)
    assert refused.status_code == 400  # type: ignore[attr-defined]
    assert refused.json["error"] == "invalid_request"  # type: ignore[attr-defined]
    assert last_reason(world) == "policy.actor: the actor token is itself delegated (act)"
    assert access_token(exchange_acted_by(actor))  # the actor's own token still acts


def allow_delegated_ci_tokens(world: World, depth: int) -> None:
    rule = RULES["payments-prod-deploy"]
    world.put_rule("payments-prod-deploy", {**rule, "actor": {"max_chain_depth": depth}})


def test_a_subject_token_its_issuer_delegated_needs_a_rule_that_allows_delegation(
    world: World,
) -> None:
    upstream_act = {"sub": "release-bot", "act": {"sub": "scheduler"}}
    refused = world.exchange(world.ci_token(act=upstream_act), audience=DEPLOY)
    assert refused.status_code == 400
    assert last_reason(world) == "policy.no_matching_rule"
    assert "delegated by its issuer (act)" in str(world.audit_rows()[-1]["detail"])

    allow_delegated_ci_tokens(world, depth=1)
    too_deep = world.exchange(world.ci_token(act=upstream_act), audience=DEPLOY)
    assert too_deep.status_code == 400
    assert "chain depth 2 exceeds 1" in str(world.audit_rows()[-1]["detail"])

    allow_delegated_ci_tokens(world, depth=2)
    granted = access_token(world.exchange(world.ci_token(act=upstream_act), audience=DEPLOY))
    assert claims_of(granted)["act"] == upstream_act


def test_a_token_of_this_sts_keeps_its_chain_through_a_re_exchange(world: World) -> None:
    """The chain sts made under a rule that allowed it: a narrowing re-exchange without an
    actor token, under a rule with no ``actor`` section, keeps it and adds no one."""
    _actor, token = delegated(world)
    again = access_token(world.workload_exchange(token, audience=VAULT, scope="secrets:read"))
    assert claims_of(again)["act"] == claims_of(token)["act"]


def test_may_act_without_iss_names_a_party_of_the_subject_tokens_issuer(world: World) -> None:
    world.put_rule("ci-delegates", {**STS_ACTOR_RULE, "actor": {"required": False, "sts": True}})
    bare = {"sub": CI_SUBJECT}  # the CI job's own sts token may act, by its sub alone
    issued = access_token(
        world.exchange(world.ci_token(may_act=bare), audience=VAULT, scope="secrets:read")
    )
    # RFC 7519 §4.1.2: that sub is unique in the CI issuer's context; the token says so.
    assert claims_of(issued)["may_act"] == {"sub": CI_SUBJECT, "iss": CI_ISSUER}

    # An sts token of the same sub is another issuer's party (sts's): refused.
    sts_actor = access_token(world.exchange(world.ci_token(), audience=DEPLOY))
    refused = world.exchange(
        world.ci_token(may_act=bare),
        audience=VAULT,
        scope="secrets:read",
        actor_token=sts_actor,
        actor_token_type=TOKEN_TYPE_ACCESS_TOKEN,
    )
    assert refused.status_code == 400
    assert last_reason(world) == "policy.may_act: the actor does not match may_act.iss"
