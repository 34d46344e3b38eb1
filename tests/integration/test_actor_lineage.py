"""Revocation reaches the tokens an actor acted in (RFC 8693 §4.1: the actor named in
``act`` is a party to the token), as it reaches the tokens exchanged from a subject.

A token minted with an sts token or a service credential as ``actor_token`` is derived
from it: revoking that token (RFC 7009) or credential, or an operator's revocation of the
actor's issuer or credential, leaves it inactive at introspection, sets its status bit and
refuses any exchange from it. Over HTTP and the CLI, on both databases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import update

from sts.db.locks import write_transaction
from sts.db.models import IssuedToken
from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_API_KEY
from sts.revocation import revoke_token
from tests.integration.test_offboarding import sts
from tests.integration.test_status_list import bit, fetch_status_list, status_of
from tests.integration.world import (
    CI_SUBJECT,
    DEPLOY,
    PROJECT,
    VAULT,
    World,
    claims_of,
    lineage_row,
)

# The CI job's token, with an sts token of its own (T_A) acting: T_D carries act.
STS_ACTOR_RULE = {
    "subject_token": {"issuer": "ci", "subject": CI_SUBJECT},
    "clients": ["ci-runner"],
    "actor": {"required": True, "sts": True},
    "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 300},
}
# The same, with the service credential agent-key acting.
CREDENTIAL_ACTOR_RULE = {
    "subject_token": {"issuer": "ci", "subject": CI_SUBJECT},
    "clients": ["ci-runner"],
    "actor": {"required": True, "credential": "agent-key"},
    "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 300},
}


def access_token(response: Any) -> str:
    assert response.status_code == 200, response.json
    token: str = response.json["access_token"]
    return token


def delegated(world: World) -> tuple[str, str]:
    """(T_A, T_D): T_A an sts token, T_D minted for the CI job with T_A as actor."""
    world.put_rule("ci-delegates", STS_ACTOR_RULE)
    actor = access_token(world.exchange(world.ci_token(), audience=DEPLOY))
    token = access_token(
        world.exchange(
            world.ci_token(),
            audience=VAULT,
            scope="secrets:read",
            actor_token=actor,
            actor_token_type=TOKEN_TYPE_ACCESS_TOKEN,
        )
    )
    assert claims_of(token)["act"]["sub"] == CI_SUBJECT
    assert world.is_active(token)
    return actor, token


def with_credential_as_actor(world: World) -> str:
    world.put_rule("ci-with-agent-key", CREDENTIAL_ACTOR_RULE)
    token = access_token(
        world.exchange(
            world.ci_token(),
            audience=VAULT,
            actor_token=world.api_key,
            actor_token_type=TOKEN_TYPE_API_KEY,
        )
    )
    assert world.is_active(token)
    return token


def status_bits(world: World, tokens: list[str]) -> list[int]:
    uri = status_of(tokens[0])[0]
    assert {status_of(token)[0] for token in tokens} == {uri}
    listed = fetch_status_list(world.client, world, uri)["status_list"]
    return [bit(listed, status_of(token)[1]) for token in tokens]


def test_revoking_the_actor_token_revokes_the_token_it_acted_in(world: World) -> None:
    actor, token = delegated(world)
    bystander = access_token(world.exchange(world.ci_token(), audience=DEPLOY))

    assert world.revoke(actor).status_code == 200

    assert not world.is_active(actor)
    assert not world.is_active(token)
    assert world.is_active(bystander)
    assert status_bits(world, [actor, token, bystander]) == [1, 1, 0]
    revocation = [row for row in world.audit_rows() if row["event"] == "token_revocation"]
    assert "revoked 2 token(s)" in revocation[-1]["detail"]


def test_the_revocation_reaches_the_descendants_of_the_token_the_actor_acted_in(
    world: World,
) -> None:
    actor, token = delegated(world)
    child = access_token(world.workload_exchange(token, audience=VAULT, scope="secrets:read"))

    assert world.revoke(actor).status_code == 200

    assert [world.is_active(t) for t in (actor, token, child)] == [False, False, False]
    assert status_bits(world, [actor, token, child]) == [1, 1, 1]


def test_a_token_whose_actor_token_was_revoked_is_not_exchanged_again(world: World) -> None:
    actor, token = delegated(world)
    assert world.revoke(actor).status_code == 200

    again = world.workload_exchange(token, audience=VAULT, scope="secrets:read")
    assert again.status_code == 400
    assert again.json["error"] == "invalid_request"
    assert world.audit_rows()[-1]["reason"] == "subject.revoked"
    as_actor = world.exchange(
        world.ci_token(),
        audience=VAULT,
        actor_token=token,
        actor_token_type=TOKEN_TYPE_ACCESS_TOKEN,
    )
    assert as_actor.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "actor.revoked"


def test_a_revoked_actor_token_is_seen_up_the_ancestry_without_the_cascade(
    world: World,
) -> None:
    """Introspection and the status list judge a token by its ancestors along both edges,
    not only by its own row: the actor token alone is marked revoked here (as when a
    token was minted from it while it was being revoked)."""
    actor, token = delegated(world)
    with world.app.extensions["sts"].session_factory() as session:
        session.execute(
            update(IssuedToken)
            .where(IssuedToken.jti == claims_of(actor)["jti"])
            .values(revoked_at=world.clock())
        )
        session.commit()

    assert not world.is_active(token)
    assert status_bits(world, [actor, token]) == [1, 1]


def test_revoking_a_credential_used_as_actor_revokes_its_tokens(world: World) -> None:
    token = with_credential_as_actor(world)
    bystander = access_token(world.exchange(world.ci_token(), audience=DEPLOY))

    presented = world.revoke(world.api_key, token_type_hint="service_credential")

    assert presented.status_code == 200
    assert not world.is_active(token)
    assert world.is_active(bystander)
    assert status_bits(world, [token, bystander]) == [1, 0]
    again = world.exchange(
        world.ci_token(),
        audience=VAULT,
        actor_token=world.api_key,
        actor_token_type=TOKEN_TYPE_API_KEY,
    )
    assert again.status_code == 400


def test_offboarding_a_credential_revokes_the_tokens_it_acted_in(world: World) -> None:
    token = with_credential_as_actor(world)
    agent = access_token(world.agent_exchange(world.agent_token(), audience=PROJECT))

    result = sts(world, "revoke", "--credential", "agent-key")

    assert result.exit_code == 0, result.output
    assert "revoked 2 token(s)" in result.output  # as actor, and as subject
    assert not world.is_active(token)
    assert not world.is_active(agent)


def test_offboarding_the_actors_issuer_revokes_the_tokens_its_actors_acted_in(
    world: World,
) -> None:
    # The subject is the agent-key credential (issued by sts), the actor an agents JWT.
    agent = access_token(world.agent_exchange(world.agent_token(), audience=PROJECT))
    ci = access_token(world.exchange(world.ci_token(), audience=DEPLOY))

    result = sts(world, "revoke", "--issuer", "agents", "--reason", "agents compromised")

    assert result.exit_code == 0, result.output
    assert "revoked 1 token(s)" in result.output
    assert [world.is_active(t) for t in (agent, ci)] == [False, True]
    assert status_bits(world, [agent, ci]) == [1, 0]
    refused = world.agent_exchange(world.agent_token(), audience=PROJECT)
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.issuer"


def test_revoking_one_jti_follows_the_actor_edge(world: World) -> None:
    actor, token = delegated(world)

    result = sts(world, "revoke", "--jti", claims_of(actor)["jti"])

    assert "revoked 2 token(s)" in result.output
    assert not world.is_active(token)


def test_the_actor_lineage_is_recorded_only_when_an_actor_token_was_presented(
    world: World,
) -> None:
    actor, token = delegated(world)
    credential_acted = with_credential_as_actor(world)
    services = world.app.extensions["sts"]
    with services.session_factory() as session:

        def edges(t: str) -> tuple[Any, ...]:
            row = session.get(IssuedToken, claims_of(t)["jti"])
            assert row is not None
            return (row.actor_parent_jti, row.actor_credential_id, row.actor_issuer)

        assert edges(actor) == (None, None, None)
        assert edges(token) == (claims_of(actor)["jti"], None, services.settings.issuer)
        acted = edges(credential_acted)
        assert acted[0] is None and acted[1] is not None
        assert acted[2] == services.settings.issuer


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_token_minted_with_an_actor_during_its_revocation_is_revoked(world: World) -> None:
    """The exchange holds its actor token's row as it holds a subject parent's (FOR SHARE
    on PostgreSQL; the write lock on SQLite): a revocation of the actor token racing the
    exchange waits for it, then finds the new token along the actor's edge."""
    world.put_rule("ci-delegates", STS_ACTOR_RULE)
    actor = access_token(world.exchange(world.ci_token(), audience=DEPLOY))
    actor_jti = claims_of(actor)["jti"]
    services = world.app.extensions["sts"]
    now = world.clock()

    # The exchange's transaction: the actor token checked (as resolve() does for either
    # role), the new token inserted, not yet committed.
    exchange = services.exchange_store.write().__enter__()
    assert exchange.parent_revocation_state(actor_jti) == (True, False)
    exchange.record_issued_token(
        lineage_row(
            "racing-delegated",
            now,
            subject=CI_SUBJECT,
            subject_issuer=world.ci.issuer,
            subject_token_id="upstream",
            actor=CI_SUBJECT,
            actor_parent_jti=actor_jti,
            actor_issuer=services.settings.issuer,
            audience=[VAULT],
            scope="secrets:read",
        )
    )

    revoked: list[int] = []

    def revoke_actor() -> None:
        with write_transaction(services.session_factory) as session:
            revoked.append(revoke_token(session, actor_jti, now))

    revoker = threading.Thread(target=revoke_actor)
    revoker.start()
    time.sleep(0.3)
    assert revoker.is_alive()  # waiting for the exchange's hold on the actor token
    exchange.commit()
    exchange.__exit__(None, None, None)
    revoker.join(timeout=10)
    assert revoked == [2]
    with services.session_factory() as session:
        racing = session.get(IssuedToken, "racing-delegated")
        assert racing is not None and racing.revoked_at is not None
