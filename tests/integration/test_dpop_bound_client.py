"""A client registered with ``dpop_bound_access_tokens`` (RFC 9449 §5.2), through the app,
on SQLite and PostgreSQL: every token request of that client must carry a DPoP proof,
whatever its rule allows, so its tokens are never bearer tokens; other clients of the
same rule are not affected."""

from __future__ import annotations

from typing import Any

from joserfc.jwk import ECKey

from sts.db import admin
from sts.db.models import IssuedToken
from tests.integration.test_dpop import ci_exchange, last_audit, make_proof
from tests.integration.world import DEPLOY, VAULT, World, claims_of, put_ci_runner


def bind_ci_runner(world: World, bound: bool = True) -> None:
    """Register ``ci-runner`` again, with ``dpop_bound_access_tokens`` set to ``bound``."""
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        put_ci_runner(session, world.clock(), dpop_bound=bound)
        session.commit()
    services.trust.invalidate()


def test_a_bound_client_without_a_proof_is_refused(world: World) -> None:
    bind_ci_runner(world)
    issued = world.count(IssuedToken)
    refused = ci_exchange(world, None)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_dpop_proof"
    assert "RFC 9449 §5.2" in refused.json["error_description"]
    assert "access_token" not in refused.json
    row = last_audit(world)
    assert (row["decision"], row["reason"], row["client_id"]) == (
        "deny",
        "client.dpop_required",
        "ci-runner",
    )
    assert world.count(IssuedToken) == issued


def test_a_bound_client_with_a_proof_gets_a_bound_token(world: World) -> None:
    bind_ci_runner(world)
    key = ECKey.generate_key("P-256")
    response = ci_exchange(world, make_proof(world, key))
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "DPoP"
    assert claims_of(response.json["access_token"])["cnf"] == {"jkt": key.thumbprint()}


def test_the_registration_binds_only_its_client(world: World) -> None:
    """The CI rule also admits the client the flag is not set on: a bearer token for it."""
    bind_ci_runner(world, bound=False)
    response = ci_exchange(world, None)
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "Bearer"


def test_client_authentication_is_answered_first(world: World) -> None:
    """A wrong secret is 401 invalid_client, not a hint that the client is DPoP-bound."""
    bind_ci_runner(world)
    response = world.exchange(world.ci_token(), audience=DEPLOY, auth=("ci-runner", "wrong"))
    assert (response.status_code, response.json["error"]) == (401, "invalid_client")
    assert last_audit(world)["reason"] != "client.dpop_required"


def test_an_invalid_proof_of_a_bound_client_is_refused_as_invalid(world: World) -> None:
    bind_ci_runner(world)
    key = ECKey.generate_key("P-256")
    response = ci_exchange(world, make_proof(world, key, htm="GET"))
    assert response.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"].startswith("dpop.")


def test_unbinding_the_client_admits_bearer_requests_again(world: World) -> None:
    bind_ci_runner(world)
    assert ci_exchange(world, None).status_code == 400
    bind_ci_runner(world, bound=False)
    answer: Any = ci_exchange(world, None)
    assert answer.status_code == 200, answer.json


def test_a_public_client_naming_itself_is_held_to_its_registration(world: World) -> None:
    """A client with ``auth_method: none`` is not authenticated, and the rules file refuses
    to bind one to DPoP (its requests could leave the client_id out). Registered so all
    the same, the client_id a request names is trusted to narrow: no bearer token."""
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        admin.put_client(
            session,
            client_id="public-app",
            auth_method="none",
            dpop_bound_access_tokens=True,
            now=world.clock(),
        )
        session.commit()
    services.trust.invalidate()
    world.put_rule(
        "anonymous-ci",
        {
            "subject_token": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
            "allow_unauthenticated": True,
            "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 60},
        },
    )

    def anonymous(client_id: str | None, proof: str | None = None) -> Any:
        form = [("client_id", client_id)] if client_id else []
        headers = {"DPoP": proof} if proof else None
        return world.exchange(
            world.ci_token(),
            audience=VAULT,
            scope="secrets:read",
            auth=None,
            form=form,
            headers=headers,
        )

    refused = anonymous("public-app")
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_dpop_proof")
    assert last_audit(world)["reason"] == "client.dpop_required"
    bound = anonymous("public-app", make_proof(world, ECKey.generate_key("P-256")))
    assert (bound.status_code, bound.json["token_type"]) == (200, "DPoP"), bound.json
    assert anonymous(None).json["token_type"] == "Bearer"  # why the rules file refuses it
