"""A client assertion (RFC 7523 §3) is used once, whatever the answer (but a DPoP nonce
challenge, RFC 9449 §8, which is no answer: test_dpop_nonce), and its replay is
refused as a failed client authentication (``invalid_client``, RFC 6749 §5.2) before
the rules' answer, also when the subject is an upstream JWT, which needs nothing from the
database (a decision that moved before the transaction must keep this order)."""

from __future__ import annotations

from typing import Any

import pytest

from sts.grants.client_auth import JWT_BEARER_ASSERTION
from tests.integration.world import DEPLOY, VAULT, World, claims_of


def exchange_with_assertion(world: World, assertion: str, audience: str) -> Any:
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]
    return world.exchange(world.ci_token(), audience=audience, auth=None, form=form)


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_a_replayed_assertion_is_refused_before_the_rules(world: World) -> None:
    assertion = world.workload_assertion(jti="assertion-replay-1")
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
    assertion = world.workload_assertion(jti="assertion-replay-2")
    refused = exchange_with_assertion(world, assertion, DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_target"
    assert world.audit_rows()[-1]["reason"].startswith("policy.")

    # Recorded with the refusal (RFC 7523 §3: used once, whatever the answer).
    again = exchange_with_assertion(world, assertion, VAULT)
    assert again.status_code == 401
    assert again.json["error"] == "invalid_client"
    assert world.audit_rows()[-1]["reason"] == "client.replay"


def at_endpoint(world: World, path: str, token: str, assertion: str) -> Any:
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]
    return world.token_request(path, token, auth=None, form=form)


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        # Authenticated, then refused: workload is not a resource server (RFC 7662 §4).
        ("/introspect", 401, "invalid_client"),
        # Authenticated, then refused: the token was issued to ci-runner (RFC 7009 §2.1).
        ("/revoke", 400, "unauthorized_client"),
    ],
)
def test_an_assertion_refused_at_another_endpoint_is_spent_too(
    world: World, path: str, status: int, error: str
) -> None:
    """An assertion whose audience is the issuer is good at every endpoint; once it has
    authenticated its client it is spent, whatever that endpoint then answers."""
    token = world.chain()[0]  # issued to ci-runner
    assertion = world.workload_assertion(aud=world.app.extensions["sts"].settings.issuer)
    refused = at_endpoint(world, path, token, assertion)
    assert (refused.status_code, refused.json["error"]) == (status, error)

    replay = exchange_with_assertion(world, assertion, VAULT)
    assert (replay.status_code, replay.json["error"]) == (401, "invalid_client")
    assert world.audit_rows()[-1]["reason"] == "client.replay"
