"""Upstream JWTs are decided (rules, claims) before the exchange's write transaction, so
the SQLite write gate is held for the writes only. The refusals and their order are
those of a decision made inside the transaction: a client assertion's replay is still
refused before the rules' answer (RFC 7523 §3, RFC 6749 §5.2)."""

from __future__ import annotations

from typing import Any

import pytest

from sts import errors
from sts.audit import AuditEntry
from sts.grants.client_auth import JWT_BEARER_ASSERTION, AuthenticatedClient
from sts.grants.token_exchange import Decided, Exchange, decide_early, present
from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_API_KEY, TOKEN_TYPE_JWT
from sts.protocol.exchange import parse_token_exchange_request
from sts.services import Services
from tests.integration.world import DEPLOY, VAULT, World, claims_of


@pytest.fixture
def workload_reads_secrets_with_ci_tokens(world: World) -> None:
    world.put_rule(
        "workload-from-ci",
        {
            "subject_token": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
            "clients": ["workload"],
            "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 60},
        },
    )


def exchange_with_assertion(world: World, assertion: str, audience: str) -> Any:
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]
    return world.exchange(world.ci_token(), audience=audience, auth=None, form=form)


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_a_replayed_assertion_is_refused_before_the_rules(world: World) -> None:
    assertion = world.workload_assertion(jti="assertion-early-1")
    first = exchange_with_assertion(world, assertion, VAULT)
    assert first.status_code == 200, first.json
    assert claims_of(first.json["access_token"])["client_id"] == "workload"

    # The rules refuse DEPLOY to this client; the replay is what the caller is told.
    replay = exchange_with_assertion(world, assertion, DEPLOY)
    assert replay.status_code == 401
    assert replay.json["error"] == "invalid_client"
    assert world.audit_rows()[-1]["reason"] == "client.replay"


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_an_exchange_the_rules_refuse_spends_the_assertion_too(world: World) -> None:
    assertion = world.workload_assertion(jti="assertion-early-2")
    refused = exchange_with_assertion(world, assertion, DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_target"
    assert world.audit_rows()[-1]["reason"].startswith("policy.")

    # Recorded with the refusal (RFC 7523 §3: used once, whatever the answer).
    again = exchange_with_assertion(world, assertion, VAULT)
    assert again.status_code == 401
    assert again.json["error"] == "invalid_client"
    assert world.audit_rows()[-1]["reason"] == "client.replay"


def decide_early_for(world: World, subject_token: str, subject_type: str, **extra: str) -> Any:
    """``decide_early`` on real verified tokens, as ``issue`` calls it."""
    services: Services = world.app.extensions["sts"]
    now = world.clock()
    trust = services.trust.current()
    form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", subject_token),
        ("subject_token_type", subject_type),
        *extra.items(),
    ]
    request = parse_token_exchange_request(form)
    subject = present(services, trust, subject_token, subject_type, "subject", now)
    actor = None
    if request.actor_token is not None and request.actor_token_type is not None:
        actor_type = request.actor_token_type
        actor = present(services, trust, request.actor_token, actor_type, "actor", now)
    client = AuthenticatedClient(client_id=extra.get("client", "ci-runner"), method="basic")
    exchange = Exchange(
        services.settings,
        trust,
        request,
        client,
        services.keyring.signing_key().kid,
        AuditEntry(at=now),
        now,
    )
    return decide_early(exchange, subject, actor)


def test_upstream_jwts_are_decided_before_the_transaction(world: World) -> None:
    decided = decide_early_for(world, world.ci_token(), TOKEN_TYPE_JWT, audience=DEPLOY)
    assert isinstance(decided, Decided)
    assert decided.claims["aud"] == DEPLOY
    assert "status" not in decided.claims  # allocated in the transaction


def test_a_refusal_decided_early_is_returned_not_raised(world: World) -> None:
    pull_request = world.ci_token(event_name="pull_request")
    refusal = decide_early_for(world, pull_request, TOKEN_TYPE_JWT, audience=DEPLOY)
    assert isinstance(refusal, errors.OAuthError)
    assert refusal.error == "invalid_request"


def test_tokens_the_database_resolves_are_decided_in_the_transaction(world: World) -> None:
    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    assert decide_early_for(world, parent, TOKEN_TYPE_ACCESS_TOKEN) is None
    assert decide_early_for(world, world.api_key, TOKEN_TYPE_API_KEY) is None
    # An upstream subject with an actor the database resolves: in the transaction too.
    api_key_actor = decide_early_for(
        world,
        world.ci_token(),
        TOKEN_TYPE_JWT,
        audience=DEPLOY,
        actor_token=world.api_key,
        actor_token_type=TOKEN_TYPE_API_KEY,
    )
    assert api_key_actor is None


def test_an_upstream_subject_and_actor_are_decided_early(world: World) -> None:
    decided = decide_early_for(
        world,
        world.ci_token(),
        TOKEN_TYPE_JWT,
        audience=DEPLOY,
        actor_token=world.agent_token(),
        actor_token_type=TOKEN_TYPE_JWT,
    )
    # No rule lets the CI runner act for an agent: refused, but decided early.
    assert isinstance(decided, errors.OAuthError)
