"""`compromised`: the key leaves the JWKS, its tokens are revoked, a fresh key signs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from sts.app import create_app
from sts.db.models import AuditRecord, IssuedToken, Revocation, SigningKey
from sts.keys.keystore import make_keystore
from sts.keys.lifecycle import KeyLifecycleError, compromise
from tests.conftest import TEST_ISSUER, FixedClock
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
