"""The three users: a CI runner, an AI agent, a workload."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from sts.db.models import IssuedToken
from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from tests.integration.world import DEPLOY, OTHER_PROJECT, PROJECT, VAULT, World, claims_of

# ---- CI runner: a deploy token only for the right repository, ref and environment ----


def test_ci_runner_gets_a_deploy_token(world: World) -> None:
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    assert response.status_code == 200
    claims = claims_of(response.json["access_token"])
    assert claims["aud"] == DEPLOY
    assert claims["scope"] == "deploy:write"
    assert claims["repository"] == "acme/payments"


@pytest.mark.parametrize(
    "overrides",
    [
        {"repository": "acme/evil"},
        {"ref": "refs/heads/feature"},
        {"environment": "staging"},
        {"sub": "repo:acme/payments:environment:staging"},
        {"sub": "repo:someone/payments:environment:production"},
        {"event_name": "pull_request"},  # explicit deny rule wins
        {"ref": None},  # a missing claim fails the condition
    ],
    ids=[
        "repository",
        "ref",
        "environment",
        "subject",
        "other-owner",
        "pull-request",
        "missing-ref",
    ],
)
def test_ci_runner_refused_when_anything_differs(world: World, overrides: dict[str, Any]) -> None:
    response = world.exchange(world.ci_token(**overrides), audience=DEPLOY)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert response.json["error_description"] == "No rule allows this exchange."


def test_deploy_token_never_outlives_the_ci_token(world: World) -> None:
    short = world.ci.mint(
        now=world.now(),
        lifetime=42,
        **{
            k: v
            for k, v in {
                "repository": "acme/payments",
                "ref": "refs/heads/main",
                "environment": "production",
                "event_name": "push",
            }.items()
        },
    )
    response = world.exchange(short, audience=DEPLOY)
    assert response.json["expires_in"] == 42
    claims = claims_of(response.json["access_token"])
    assert claims["exp"] == claims_of(short)["exp"]


# ---- AI agent: service credential + actor token → one project, one action, act ------


def test_agent_gets_a_one_project_token_with_act(world: World) -> None:
    response = world.agent_exchange(
        world.agent_token("agent-7"), audience=PROJECT, scope="issues:write"
    )
    assert response.status_code == 200, response.json
    claims = claims_of(response.json["access_token"])
    assert claims["sub"] == "team-alpha-automation"  # the credential's owner
    assert claims["act"] == {"sub": "agent-7", "iss": world.agents.issuer}  # RFC 8693 §4.1
    assert claims["aud"] == PROJECT
    assert claims["scope"] == "issues:write"
    assert response.json["expires_in"] == 300
    assert claims["client_id"] == "agent-runtime"
    row = world.audit_rows()[-1]
    assert row["actor"] == "agent-7" and row["decision"] == "allow"


@pytest.mark.parametrize(
    ("actor", "params", "error"),
    [
        (None, {"audience": PROJECT, "scope": "issues:write"}, "invalid_request"),
        ("robot-1", {"audience": PROJECT, "scope": "issues:write"}, "invalid_request"),
        ("agent-7", {"audience": OTHER_PROJECT, "scope": "issues:write"}, "invalid_target"),
        ("agent-7", {"audience": PROJECT, "scope": "issues:write repo:admin"}, "invalid_scope"),
    ],
    ids=["no-actor", "actor-not-allowed", "other-project", "wider-action"],
)
def test_agent_refusals(
    world: World, actor: str | None, params: dict[str, str], error: str
) -> None:
    actor_token = world.agent_token(actor) if actor else None
    response = world.agent_exchange(actor_token, **params)
    assert response.status_code == 400
    assert response.json["error"] == error


def acting(world: World, agent: str) -> dict[str, str]:
    """The actor parameters of an exchange in which ``agent`` acts."""
    return {"actor_token": world.agent_token(agent), "actor_token_type": TOKEN_TYPE_JWT}


MAY_ACT_REFUSAL = "policy.may_act: the actor does not match may_act.sub"


def test_may_act_in_the_subject_token_is_enforced(world: World) -> None:
    world.put_rule(
        "ci-with-agent",
        {
            "subject_token": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
            "clients": ["ci-runner"],
            "actor": {"required": True, "issuer": "agents"},
            "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 120},
        },
    )
    allowed = world.ci_token(may_act={"sub": "agent-1", "iss": world.agents.issuer})
    response = world.exchange(allowed, audience=VAULT, **acting(world, "agent-1"))
    assert response.status_code == 200, response.json
    response = world.exchange(allowed, audience=VAULT, **acting(world, "agent-2"))
    assert response.status_code == 400
    assert world.audit_rows()[-1]["reason"] == MAY_ACT_REFUSAL


def test_may_act_is_carried_on_so_a_re_exchange_cannot_add_another_actor(world: World) -> None:
    """RFC 8693 §4.4: the CI token names agent-1 as the only party that may act for its
    subject. A token exchanged from it without an actor keeps that restriction, so a
    re-exchange under a rule that allows delegation still refuses agent-2."""
    world.put_rule(
        "sts-with-agent",
        {
            "subject_token": {"sts": True},
            "clients": ["workload"],
            "actor": {"required": True, "issuer": "agents"},
            "allow": {"audiences": [DEPLOY], "scopes": ["deploy:write"], "max_ttl": 120},
        },
    )
    may_act = {"sub": "agent-1", "iss": world.agents.issuer}
    first = world.exchange(world.ci_token(may_act=may_act), audience=DEPLOY)
    assert first.status_code == 200, first.json
    token = first.json["access_token"]
    assert claims_of(token)["may_act"] == may_act

    refused = world.workload_exchange(token, audience=DEPLOY, **acting(world, "agent-2"))
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == MAY_ACT_REFUSAL

    granted = world.workload_exchange(token, audience=DEPLOY, **acting(world, "agent-1"))
    assert granted.status_code == 200, granted.json
    delegated = claims_of(granted.json["access_token"])
    assert (delegated["act"]["sub"], delegated["may_act"]) == ("agent-1", may_act)


# ---- workload: re-exchange for something narrower; never wider ---------------------


def parent_token(world: World, scope: str = "deploy:write deploy:read") -> str:
    response = world.exchange(world.ci_token(), audience=DEPLOY, scope=scope)
    assert response.status_code == 200
    return str(response.json["access_token"])


def test_workload_narrows_a_token(world: World) -> None:
    parent = parent_token(world)
    world.clock.advance(100)
    response = world.workload_exchange(parent, audience=DEPLOY, scope="deploy:read")
    assert response.status_code == 200, response.json
    child = claims_of(response.json["access_token"])
    assert child["scope"] == "deploy:read"
    assert child["sub"] == claims_of(parent)["sub"]
    assert child["exp"] <= claims_of(parent)["exp"]  # never outlives the parent
    assert response.json["expires_in"] == 200
    assert child["repository"] == "acme/payments"
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        assert session.get(IssuedToken, child["jti"]).parent_jti == claims_of(parent)["jti"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"audience": DEPLOY, "scope": "secrets:read"}, "invalid_scope"),
        ({"audience": VAULT}, "invalid_target"),
        ({"audience": DEPLOY, "scope": "deploy:write deploy:read deploy:admin"}, "invalid_scope"),
    ],
    ids=["scope-the-parent-lacks", "audience-the-parent-lacks", "scope-no-rule-grants"],
)
def test_workload_cannot_widen(world: World, params: dict[str, str], error: str) -> None:
    response = world.workload_exchange(parent_token(world, scope="deploy:read"), **params)
    assert response.status_code == 400
    assert response.json["error"] == error


def test_chained_narrowing_keeps_narrowing(world: World) -> None:
    first = parent_token(world)
    second = world.workload_exchange(first, audience=DEPLOY, scope="deploy:read").json[
        "access_token"
    ]
    third = world.workload_exchange(second, audience=DEPLOY, scope="deploy:write")
    assert third.status_code == 400 and third.json["error"] == "invalid_scope"
    # The rule's default scope is not the parent's: nothing left, and no "scope" member
    # (RFC 6749 §3.3 has no empty scope).
    fourth = world.workload_exchange(second, audience=DEPLOY)
    assert fourth.status_code == 200 and "scope" not in fourth.json


def test_revoked_parent_cannot_be_exchanged(world: World) -> None:
    parent = parent_token(world)
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        session.execute(update(IssuedToken).values(revoked_at=world.clock()))
        session.commit()
    response = world.workload_exchange(parent, audience=DEPLOY)
    assert response.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "subject.revoked"


def test_expired_parent_cannot_be_exchanged(world: World) -> None:
    parent = parent_token(world)
    world.clock.advance(300 + 31)  # past exp plus leeway
    response = world.workload_exchange(parent, audience=DEPLOY)
    assert response.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "subject.expired"


def test_own_token_declared_as_access_token(world: World) -> None:
    parent = parent_token(world)
    response = world.workload_exchange(
        parent, audience=DEPLOY, requested_token_type=TOKEN_TYPE_ACCESS_TOKEN
    )
    assert response.status_code == 200


@pytest.mark.parametrize("alg", ["EdDSA", "RS256", "PS256"])
def test_exchange_and_re_exchange_with_each_signing_algorithm(
    empty_database_url: str,
    make_settings,
    clock,
    alg: str,  # type: ignore[no-untyped-def]
) -> None:
    import jwt as pyjwt

    from sts.app import create_app
    from tests.integration.world import seed_world
    from tests.issuer import TestIssuer

    app = create_app(make_settings(empty_database_url, signing_alg=alg), clock=clock)
    ci, agents = TestIssuer("https://ci.issuer.test"), TestIssuer("https://agents.issuer.test")
    try:
        with ci.serve():
            world = seed_world(app, clock, ci, agents)
            parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
            header = pyjwt.get_unverified_header(parent)
            assert header["alg"] == alg
            jwks = pyjwt.PyJWKSet.from_dict(world.client.get("/jwks.json").json)
            key = next(k for k in jwks.keys if k.key_id == header["kid"])
            pyjwt.decode(parent, key=key, algorithms=[alg], audience=DEPLOY, leeway=10**9)
            child = world.workload_exchange(parent, audience=DEPLOY, scope="deploy:write")
            assert child.status_code == 200, child.json
    finally:
        app.extensions["sts"].engine.dispose()
