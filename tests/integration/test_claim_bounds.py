"""A ``sub`` or ``jti`` longer than the lineage and audit rows hold is refused and
recorded, on both databases (on PostgreSQL the row's insert used to fail: a 503, and a
refusal that could not be written). At the bound, the exchange goes through."""

from __future__ import annotations

import pytest

from tests.integration.test_client_assertion_replay import exchange_with_assertion
from tests.integration.world import DEPLOY, PROJECT, VAULT, World


def last_reason(world: World) -> str:
    return str(world.audit_rows()[-1]["reason"])


def test_a_subject_token_jti_past_255_characters_is_refused_and_recorded(world: World) -> None:
    refused = world.exchange(world.ci_token(jti="j" * 256), audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"
    assert "jti longer than 255" in refused.json["error_description"]
    assert last_reason(world) == "subject.jti_too_long"
    granted = world.exchange(world.ci_token(jti="j" * 255), audience=DEPLOY)
    assert granted.status_code == 200, granted.json
    assert world.audit_rows()[-1]["subject_token_id"] == "j" * 255


def test_a_subject_past_1024_characters_is_refused_and_recorded(world: World) -> None:
    refused = world.exchange(world.ci_token(sub="s" * 1025), audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"
    assert "sub longer than 1024" in refused.json["error_description"]
    assert last_reason(world) == "subject.sub_too_long"


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
