"""A ``sub`` or ``jti`` longer than the lineage and audit rows hold is refused and
recorded, on both databases (on PostgreSQL the row's insert used to fail: a 503, and a
refusal that could not be written). At the bound, the exchange goes through."""

from __future__ import annotations

import pytest

from tests.integration.test_client_assertion_replay import exchange_with_assertion
from tests.integration.world import DEPLOY, PROJECT, VAULT, World


def last_reason(world: World) -> str:
    return str(world.audit_rows()[-1]["reason"])


@pytest.mark.parametrize(
    ("claim", "bound", "column"), [("jti", 255, "subject_token_id"), ("sub", 1024, "subject")]
)
def test_a_subject_token_claim_past_its_bound_is_refused_and_recorded(
    world: World, claim: str, bound: int, column: str
) -> None:
    refused = world.exchange(world.ci_token(**{claim: "x" * (bound + 1)}), audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"
    assert f"{claim} longer than {bound}" in refused.json["error_description"]
    assert last_reason(world) == f"subject.{claim}_too_long"
    # At the bound the token is accepted (a sub no rule names is then refused by the
    # rules), and the audit row holds the value whole.
    world.exchange(world.ci_token(**{claim: "x" * bound}), audience=DEPLOY)
    row = world.audit_rows()[-1]
    assert row["reason"] != f"subject.{claim}_too_long"
    assert row[column] == "x" * bound


def test_an_actor_past_1024_characters_is_refused_and_recorded(world: World) -> None:
    actor = world.agent_token(sub="a" * 1025)
    refused = world.agent_exchange(actor, audience=PROJECT, scope="issues:write")
    assert refused.status_code == 400
    assert "actor token has a sub longer" in refused.json["error_description"]
    assert last_reason(world) == "actor.sub_too_long"


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_a_client_assertion_jti_past_255_characters_is_invalid_client(world: World) -> None:
    refused = exchange_with_assertion(world, world.workload_assertion(jti="k" * 256), VAULT)
    assert refused.status_code == 401
    assert refused.json["error"] == "invalid_client"
    assert last_reason(world) == "client.assertion_jti"
    granted = exchange_with_assertion(world, world.workload_assertion(jti="k" * 255), VAULT)
    assert granted.status_code == 200, granted.json


def test_an_upstream_act_sub_that_the_lineage_cannot_hold_is_refused(world: World) -> None:
    """RFC 8693 §4.1: ``act.sub`` names the actor; an upstream token's ``act`` is carried
    into the new token and its ``sub`` into the lineage (``actor``, 1024 characters)."""
    for act in ({"sub": "a" * 1025}, {"sub": 7}):
        refused = world.exchange(world.ci_token(act=act), audience=DEPLOY)
        assert refused.status_code == 400
        assert last_reason(world) == "subject.act_sub"
    assert (
        world.exchange(world.ci_token(act={"sub": "a" * 1024}), audience=DEPLOY).status_code == 200
    )
