"""`compromised`: the key leaves the JWKS, its tokens are revoked, a fresh key signs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select

from sts.app import create_app
from sts.db import queries
from sts.db.models import AuditRecord, IssuedToken, Revocation, SigningKey
from sts.grants import token_exchange
from sts.keys.keyring import ActiveKey
from sts.keys.keystore import make_keystore
from sts.keys.lifecycle import KeyLifecycleError, compromise
from sts.tokens.mint import mint_access_token
from tests.conftest import TEST_ISSUER, FixedClock
from tests.integration.world import DEPLOY, World, claims_of, seed_world
from tests.issuer import TestIssuer
from tests.keys_helpers import ROTATION, kids, sign, verify


def issued_token(jti: str, kid: str, clock: FixedClock, **overrides: object) -> IssuedToken:
    values: dict[str, object] = {
        "jti": jti,
        "subject": "repo:example/app",
        "subject_issuer": "https://ci.example",
        "rule_id": 1,
        "rule_version": 1,
        "audience": ["https://api.example"],
        "scope": "read",
        "kid": kid,
        "issued_at": clock(),
        "expires_at": clock() + timedelta(minutes=15),
    }
    values.update(overrides)
    return IssuedToken(**values)


def test_compromised_key_is_unpublished_revoked_and_replaced(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, clock: FixedClock
) -> None:
    settings = make_settings(empty_database_url, **ROTATION)
    app = create_app(settings, clock=clock)
    other_replica = create_app(settings, clock=clock)
    services = app.extensions["sts"]
    client = app.test_client()
    try:
        leaked = services.keyring.signing_key().kid
        earlier = clock() - timedelta(minutes=5)
        with services.session_factory() as session:
            session.add_all(
                [
                    issued_token("t1", leaked, clock),
                    issued_token("t2", leaked, clock),
                    issued_token("t3", leaked, clock, revoked_at=earlier),
                    issued_token("t4", "another-kid", clock),
                ]
            )
            session.commit()
        assert leaked in kids(other_replica.test_client().get("/jwks.json").json)

        clock.advance(60)
        compromised_at = clock()
        result = compromise(
            services.session_factory, make_keystore(settings), "ES256", leaked, clock
        )
        assert result.kid == leaked
        assert result.tokens_revoked == 2
        assert result.new_kid is not None and result.new_kid != leaked

        # This process reloads at once; every other replica within the refresh interval.
        services.keyring.load()
        jwks = client.get("/jwks.json").json
        assert kids(jwks) == {result.new_kid}
        clock.advance(settings.key_refresh_interval)
        assert kids(other_replica.test_client().get("/jwks.json").json) == {result.new_kid}

        # New signatures use the new kid, at once (the lead time is skipped).
        active = services.keyring.signing_key()
        assert active.kid == result.new_kid
        token = sign(active, {"iss": TEST_ISSUER})
        assert verify(token, jwks, active.alg) == {"iss": TEST_ISSUER}
        assert other_replica.extensions["sts"].keyring.signing_key().kid == result.new_kid

        with services.session_factory() as session:
            revoked = dict(session.execute(select(IssuedToken.jti, IssuedToken.revoked_at)).all())
            # Every token the key signed is revoked; one revoked earlier keeps its time.
            assert revoked == {
                "t1": compromised_at,
                "t2": compromised_at,
                "t3": earlier,
                "t4": None,
            }
            (revocation,) = session.scalars(select(Revocation)).all()
            assert (revocation.kind, revocation.value) == ("key", leaked)
            (audit,) = session.scalars(select(AuditRecord)).all()
            assert (audit.event, audit.decision) == ("key_compromised", "info")
            assert f"kid={leaked}" in (audit.detail or "")
            assert "tokens_revoked=2" in (audit.detail or "")
            row = session.get(SigningKey, leaked)
            assert row is not None
            assert row.state == "compromised"
            assert row.compromised_at is not None
            assert row.encrypted_private_key is None
        assert not (settings.keys_dir / f"{leaked}.pem").exists()  # private half destroyed

        with pytest.raises(KeyLifecycleError, match="is already marked compromised"):
            compromise(services.session_factory, make_keystore(settings), "ES256", leaked, clock)
    finally:
        services.engine.dispose()
        other_replica.extensions["sts"].engine.dispose()


def test_compromised_pending_key_leaves_the_active_key_signing(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, clock: FixedClock
) -> None:
    settings = make_settings(empty_database_url, **ROTATION)
    app = create_app(settings, clock=clock)
    services = app.extensions["sts"]
    try:
        active = services.keyring.signing_key().kid
        clock.advance(3600 - 600 - 45)
        services.keyring.load()  # publishes the successor
        (pending,) = kids(services.keyring.jwks()) - {active}
        result = compromise(
            services.session_factory, make_keystore(settings), "ES256", pending, clock
        )
        assert result.new_kid is None
        services.keyring.load()
        assert services.keyring.signing_key().kid == active
        assert pending not in kids(services.keyring.jwks())
    finally:
        services.engine.dispose()


# ---- a compromise racing an exchange: one of them waits for the other -------------------


def paused_inside(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str
) -> tuple[threading.Event, threading.Event]:
    """Make ``module.name`` stop (inside its caller's transaction) until released."""
    inside, go_on = threading.Event(), threading.Event()
    original = getattr(module, name)

    def paused(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        assert go_on.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, paused)
    return inside, go_on


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(target()))
    thread.start()
    return thread, outcome


def second_waits_for_first(
    first: Callable[[], Any],
    paused: tuple[threading.Event, threading.Event],
    second: Callable[[], Any],
) -> tuple[Any, Any]:
    """Start ``first`` and let it stop inside its transaction; start ``second`` and check it
    is still waiting half a second later; let ``first`` go on. What each returned."""
    inside, go_on = paused
    first_thread, first_outcome = in_thread(first)
    assert inside.wait(10)
    second_thread, second_outcome = in_thread(second)
    second_thread.join(0.5)
    assert second_thread.is_alive()  # waits for the first
    go_on.set()
    first_thread.join(10)
    second_thread.join(10)
    return first_outcome[0], second_outcome[0]


def compromise_of(world: World, kid: str) -> Callable[[], Any]:
    settings = world.app.extensions["sts"].settings
    return lambda: compromise(
        world.app.extensions["sts"].session_factory,
        make_keystore(settings),
        "ES256",
        kid,
        world.clock,
    )


def test_a_compromise_waits_for_an_exchange_in_flight_then_revokes_its_token(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = world.app.extensions["sts"]
    kid = services.keyring.signing_key().kid
    response, result = second_waits_for_first(
        # Paused inside its transaction (the governance lock held), before its block check.
        lambda: world.exchange(world.ci_token(), audience=DEPLOY),
        paused_inside(monkeypatch, token_exchange, "allocate_token_status"),
        compromise_of(world, kid),
    )
    assert response.status_code == 200
    token = response.json["access_token"]
    assert pyjwt.get_unverified_header(token)["kid"] == kid
    assert result.tokens_revoked >= 1
    with services.session_factory() as session:
        row = session.get(IssuedToken, claims_of(token)["jti"])
        assert row is not None and row.revoked_at is not None  # revoked with the others
    assert not world.is_active(token)


def test_an_exchange_that_begins_during_a_compromise_waits_then_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = world.app.extensions["sts"]
    kid = services.keyring.signing_key().kid
    result, response = second_waits_for_first(
        compromise_of(world, kid),  # made, not yet committed
        paused_inside(monkeypatch, queries, "add_audit_record"),
        lambda: world.exchange(world.ci_token(), audience=DEPLOY),
    )
    assert result.kid == kid
    assert response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"
    assert world.audit_rows()[-1]["reason"] == "keys.compromised"
    retry = world.exchange(world.ci_token(), audience=DEPLOY)  # signed by the new key
    assert retry.status_code == 200
    assert pyjwt.get_unverified_header(retry.json["access_token"])["kid"] == result.new_kid


# ---- a compromised key that this process still verifies with, and what was derived ------


@pytest.fixture
def rotating_world(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, clock: FixedClock
) -> Iterator[World]:
    """The test world, with keys that rotate (ROTATION) as the clock moves."""
    app = create_app(make_settings(empty_database_url, **ROTATION), clock=clock)
    ci = TestIssuer("https://ci.issuer.test")
    try:
        with ci.serve():
            yield seed_world(app, clock, ci, TestIssuer("https://agents.issuer.test"))
    finally:
        app.extensions["sts"].engine.dispose()


def exchanged(response: Any) -> str:
    assert response.status_code == 200, response.json
    return str(response.json["access_token"])


def ci_deploy_token(world: World) -> str:
    return exchanged(world.exchange(world.ci_token(), audience=DEPLOY))


def rotated_past(world: World, before: Callable[[], str]) -> tuple[ActiveKey, str]:
    """Run ``before`` just before the active key's period ends, then move past it: the
    successor signs, the old key still verifies. The old key, and what ``before`` gave."""
    services = world.app.extensions["sts"]
    old = services.keyring.signing_key()
    ahead = ROTATION["key_publish_lead_time"] + ROTATION["key_refresh_interval"]
    world.clock.advance(ROTATION["key_active_period"] - ahead)
    services.keyring.load()  # the successor is published
    world.clock.advance(ahead - 10)
    given = before()
    world.clock.advance(20)
    services.keyring.load()  # and now signs
    assert services.keyring.signing_key().kid != old.kid
    return old, given


def test_a_compromise_revokes_what_was_derived_from_the_keys_tokens(
    rotating_world: World,
) -> None:
    """A token exchanged from one the leaked key signed is revoked with it, whatever key
    signed it: introspection calls it inactive (an ancestor is revoked), and the exchange,
    which reads only the presented token's own row, refuses it too."""
    world = rotating_world
    old, first = rotated_past(
        world, lambda: exchanged(world.exchange(world.ci_token(), audience=DEPLOY))
    )
    derived = exchanged(world.workload_exchange(first, audience=DEPLOY, scope="deploy:write"))
    assert pyjwt.get_unverified_header(derived)["kid"] != old.kid
    unrelated = ci_deploy_token(world)

    result = compromise_of(world, old.kid)()
    assert result.tokens_revoked >= 2
    assert not world.is_active(derived)
    refused = world.workload_exchange(derived, audience=DEPLOY, scope="deploy:write")
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "subject.revoked"
    assert world.is_active(unrelated)  # signed by the new key, from a CI token: untouched


def test_a_token_signed_by_a_compromised_key_is_refused_before_the_ring_is_read_again(
    rotating_world: World,
) -> None:
    """Whoever holds the leaked key can sign any claims, a live token's jti among them.
    Until this process reads its key ring again it still verifies that signature; the
    exchange's block check covers the presented token's key, so the forgery is refused."""
    world = rotating_world
    services = world.app.extensions["sts"]
    old, _ = rotated_past(world, lambda: "")
    genuine = ci_deploy_token(world)  # signed by the new key
    forged = mint_access_token(claims_of(genuine), old)  # the same claims, the leaked key
    assert world.workload_exchange(forged, audience=DEPLOY, scope="deploy:write").status_code == 200

    compromise_of(world, old.kid)()  # another replica's doing: this ring is not re-read
    assert old.kid in kids(services.keyring.jwks())
    refused = world.workload_exchange(forged, audience=DEPLOY, scope="deploy:write")
    assert refused.status_code == 400, refused.json
    assert refused.json["error"] == "invalid_request"
    row = world.audit_rows()[-1]
    assert (row["decision"], row["reason"]) == ("deny", "subject.key_revoked")
    exchanged(world.workload_exchange(genuine, audience=DEPLOY, scope="deploy:write"))
