"""Stored trust configuration that no longer loads fails closed for its own part only, over
HTTP on both backends: a client's or an issuer's key set that does not import, and a rule
that does not compile (a deny rule then denies every exchange until it is fixed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from sts.db import admin
from sts.db.models import Rule
from tests.conftest import TEST_ISSUER
from tests.integration.world import DEPLOY, PROJECT, RULES, World

# A P-384 point that is not on the curve: stored, it used to make every exchange a 500.
OFF_CURVE = {"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}
DENY_RULE = "no-pull-request-deploys"


def reload(world: World) -> None:
    world.app.extensions["sts"].trust.invalidate()


def test_a_client_whose_keys_do_not_import_cannot_authenticate_and_no_one_else_notices(
    world: World,
) -> None:
    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    with world.app.extensions["sts"].session_factory() as session:
        admin.put_client(
            session,
            client_id="workload",
            auth_method="private_key_jwt",
            jwks=OFF_CURVE,
            now=world.clock(),
        )
        session.commit()
    reload(world)

    refused = world.workload_exchange(parent, audience=DEPLOY)
    assert refused.status_code == 401, refused.json
    assert refused.json["error"] == "invalid_client"
    assert world.audit_rows()[-1]["reason"] == "client.keys_invalid"
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert world.agent_exchange(world.agent_token(), audience=PROJECT).status_code == 200
    ready = world.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"]["key_sets"] == "invalid: client workload"


def test_an_issuer_whose_inline_keys_do_not_import_has_its_tokens_refused_alone(
    world: World,
) -> None:
    with world.app.extensions["sts"].session_factory() as session:
        admin.put_issuer(
            session,
            name="agents",
            issuer=world.agents.issuer,
            jwks=OFF_CURVE,
            algorithms=["ES256"],
            audiences=[TEST_ISSUER],
            now=world.clock(),
        )
        session.commit()
    reload(world)

    refused = world.agent_exchange(world.agent_token(), audience=PROJECT)
    assert refused.status_code == 503, refused.json  # as for an issuer with no keys at all
    assert refused.json["error"] == "temporarily_unavailable"
    assert world.audit_rows()[-1]["decision"] == "deny"
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert world.client.get("/readyz").json["checks"]["key_sets"] == "invalid: issuer agents"


def store_without_validation(world: World, name: str, definition: dict[str, Any]) -> int:
    """What an older release may have stored (a YAML number as description), written
    straight into the row as an upgrade would find it."""
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        rule_id = session.scalars(select(Rule.id).where(Rule.name == name)).one()
        session.execute(update(Rule).where(Rule.id == rule_id).values(definition=definition))
        admin.bump_generation(session)
        session.commit()
    reload(world)
    return rule_id


def test_a_deny_rule_that_no_longer_compiles_denies_every_exchange_until_fixed(
    world: World,
) -> None:
    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    rule_id = store_without_validation(world, DENY_RULE, {**RULES[DENY_RULE], "description": 2024})

    for response in (
        world.exchange(world.ci_token(), audience=DEPLOY),  # a push: the rule never denied it
        world.agent_exchange(world.agent_token(), audience=PROJECT),
        world.workload_exchange(parent, audience=DEPLOY),
    ):
        assert response.status_code == 400, response.json
        assert response.json["error"] == "invalid_request"
        row = world.audit_rows()[-1]
        assert (row["decision"], row["reason"]) == ("deny", "policy.denied_by_rule")
        assert row["rule_id"] == rule_id
        assert f"{DENY_RULE}: matched: explicit deny" in row["detail"]
    ready = world.client.get("/readyz")
    assert ready.status_code == 200  # it fails closed; taking sts out of service adds nothing
    assert ready.json["checks"]["rules"] == f"invalid: {DENY_RULE}"

    world.put_rule(DENY_RULE, RULES[DENY_RULE])  # fixed: governed by its conditions again
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    pull_request = world.exchange(world.ci_token(event_name="pull_request"), audience=DEPLOY)
    assert pull_request.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "policy.denied_by_rule"
    assert world.client.get("/readyz").json["checks"]["rules"] == "ok"


def test_an_allow_rule_that_no_longer_compiles_grants_nothing_and_nothing_more(
    world: World,
) -> None:
    store_without_validation(
        world, "payments-prod-deploy", {**RULES["payments-prod-deploy"], "description": 2024}
    )
    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "policy.no_matching_rule"
    other = world.agent_exchange(world.agent_token(), audience=PROJECT)
    assert other.status_code == 200, other.json  # the other rules are unaffected
    assert world.client.get("/readyz").json["checks"]["rules"] == "invalid: payments-prod-deploy"
