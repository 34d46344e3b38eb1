"""Server-provided DPoP nonces (RFC 9449 §8) at the token endpoint, through the app, on
SQLite and PostgreSQL: with ``STS_DPOP_NONCE_SECRET`` set, a proof without a current nonce
is answered ``use_dpop_nonce`` with the nonce in ``DPoP-Nonce``, the refusal is audited
and the proof is not spent; the retry with the nonce is granted and its answer carries the
nonce for the next proof (§8.2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from joserfc.jwk import ECKey

from sts.app import create_app
from sts.db.models import ClientAssertion, DpopProof
from sts.grants.client_auth import JWT_BEARER_ASSERTION
from tests.conftest import FixedClock
from tests.integration.test_dpop import ci_exchange, last_audit, make_proof
from tests.integration.world import VAULT, World, claims_of

SECRET = "a-test-secret-of-at-least-32-chars!"
LIFETIME = 120


@pytest.fixture
def app(empty_database_url: str, make_settings, clock: FixedClock) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    settings = make_settings(
        empty_database_url, dpop_nonce_secret=SECRET, dpop_nonce_lifetime=LIFETIME
    )
    application = create_app(settings, clock=clock)
    yield application
    application.extensions["sts"].engine.dispose()


def proofs_recorded(world: World) -> int:
    with world.app.extensions["sts"].session_factory() as session:
        return session.query(DpopProof).count()


def told_to_use_nonce(response: Any, reason: str, world: World) -> str:
    assert response.status_code == 400, response.json
    assert response.json["error"] == "use_dpop_nonce"
    assert "access_token" not in response.json
    assert response.headers["Cache-Control"] == "no-store"
    assert last_audit(world)["reason"] == reason
    nonce: str = response.headers["DPoP-Nonce"]
    return nonce


def test_a_proof_without_a_nonce_is_told_the_nonce_and_the_retry_is_granted(
    world: World,
) -> None:
    key = ECKey.generate_key("P-256")
    jti = "the-same-jti"
    first = ci_exchange(world, make_proof(world, key, jti=jti))
    nonce = told_to_use_nonce(first, "dpop.nonce_missing", world)
    assert proofs_recorded(world) == 0  # not spent: it was never going to be accepted
    assert last_audit(world)["detail"] == f"dpop_jkt={key.thumbprint()}"

    retry = ci_exchange(world, make_proof(world, key, jti=jti, nonce=nonce))
    assert retry.status_code == 200, retry.json
    assert retry.json["token_type"] == "DPoP"
    assert claims_of(retry.json["access_token"])["cnf"] == {"jkt": key.thumbprint()}
    assert retry.headers["DPoP-Nonce"] == nonce  # §8.2: the nonce for the next proof
    assert proofs_recorded(world) == 1


def test_a_stale_nonce_is_told_the_current_one(world: World) -> None:
    key = ECKey.generate_key("P-256")
    nonce = told_to_use_nonce(
        ci_exchange(world, make_proof(world, key)), "dpop.nonce_missing", world
    )
    world.clock.advance(LIFETIME)  # the next window: still accepted
    granted = ci_exchange(world, make_proof(world, key, nonce=nonce))
    assert granted.status_code == 200, granted.json
    assert granted.headers["DPoP-Nonce"] != nonce  # a new window's

    world.clock.advance(LIFETIME)  # two windows on: stale
    current = told_to_use_nonce(
        ci_exchange(world, make_proof(world, key, nonce=nonce)), "dpop.nonce_invalid", world
    )
    assert current not in (nonce, granted.headers["DPoP-Nonce"])  # this window's
    assert ci_exchange(world, make_proof(world, key, nonce=current)).status_code == 200
    # the one handed out with the grant, a window ago, is good until the window ends
    renewed = make_proof(world, key, nonce=granted.headers["DPoP-Nonce"])
    assert ci_exchange(world, renewed).status_code == 200


def test_a_replayed_proof_with_a_nonce_is_still_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    nonce = told_to_use_nonce(
        ci_exchange(world, make_proof(world, key)), "dpop.nonce_missing", world
    )
    proof = make_proof(world, key, nonce=nonce)
    assert ci_exchange(world, proof).status_code == 200
    replay = ci_exchange(world, proof)
    assert replay.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.replay"


def test_a_request_without_a_proof_gets_a_bearer_token_and_no_nonce(world: World) -> None:
    """Nonces constrain proofs; a rule decides whether a proof is needed at all."""
    response = ci_exchange(world, None)
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "Bearer"
    assert "DPoP-Nonce" not in response.headers


def test_the_secret_is_never_shown(world: World) -> None:
    settings = world.app.extensions["sts"].settings
    assert settings.describe()["STS_DPOP_NONCE_SECRET"] == "<set>"
    assert SECRET not in repr(settings)


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_the_challenge_leaves_the_client_assertion_for_the_retry(world: World) -> None:
    """RFC 9449 §8: the client sends the same request again with a proof carrying the
    nonce. The challenge is no decision, so the client assertion (RFC 7523 §3) is not
    spent by it; the retry with the same assertion is granted and spends it, and a replay
    after that is refused as one."""
    key = ECKey.generate_key("P-256")
    assertion = world.workload_assertion(jti="assertion-through-a-nonce")
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]

    def send(proof: str) -> Any:
        return world.exchange(
            world.ci_token(), audience=VAULT, auth=None, form=form, headers={"DPoP": proof}
        )

    nonce = told_to_use_nonce(send(make_proof(world, key)), "dpop.nonce_missing", world)
    assert last_audit(world)["client_id"] == "workload"  # authenticated, then challenged
    assert world.count(ClientAssertion) == 0

    retry = send(make_proof(world, key, nonce=nonce))
    assert retry.status_code == 200, retry.json
    assert world.count(ClientAssertion) == 1

    replay = send(make_proof(world, key, nonce=nonce))
    assert (replay.status_code, replay.json["error"]) == (401, "invalid_client")
    assert last_audit(world)["reason"] == "client.replay"


def test_a_nonce_of_the_previous_secret_is_granted_while_it_rolls_out(
    empty_database_url: str,
    make_settings,  # type: ignore[no-untyped-def]
    clock: FixedClock,
) -> None:
    """``STS_DPOP_NONCE_PREVIOUS_SECRET``: a caller holding a nonce a replica handed out
    under the old secret is granted by one on the new secret, which hands out its own
    nonce with the token (RFC 9449 §8.2)."""
    from sts.tokens.dpop_nonce import DpopNonces
    from tests.integration.world import seed_world
    from tests.issuer import TestIssuer

    old = "an-old-secret-of-at-least-32-chars!"
    settings = make_settings(
        empty_database_url,
        dpop_nonce_secret=SECRET,
        dpop_nonce_previous_secret=old,
        dpop_nonce_lifetime=LIFETIME,
    )
    application = create_app(settings, clock=clock)
    ci = TestIssuer("https://ci.issuer.test")
    try:
        with ci.serve():
            world = seed_world(application, clock, ci, TestIssuer("https://agents.issuer.test"))
            key = ECKey.generate_key("P-256")
            old_nonce = DpopNonces(old, LIFETIME).current(clock())
            granted = ci_exchange(world, make_proof(world, key, nonce=old_nonce))
            assert granted.status_code == 200, granted.json
            new_nonce = DpopNonces(SECRET, LIFETIME).current(clock())
            assert granted.headers["DPoP-Nonce"] == new_nonce
        assert settings.describe()["STS_DPOP_NONCE_PREVIOUS_SECRET"] == "<set>"
    finally:
        application.extensions["sts"].engine.dispose()
