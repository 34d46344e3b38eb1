"""A replica that cannot use the key the database says is active fails closed, on SQLite
and PostgreSQL: no token (503 ``temporarily_unavailable``), /readyz 503, a JWKS that
follows the database, one secret-free warning; and it recovers by itself, without a
restart, once the key loads. Only a database outage keeps the last keys loaded."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from sts.app import create_app
from sts.db.models import SigningKey
from sts.keys.keystore import DatabaseKeyStore, FileKeyStore, KeyStore
from sts.keys.lifecycle import activate, compromise, create_signing_key
from sts.keys.material import PrivateKey, generate_private_key
from sts.services import Services
from tests.conftest import TEST_PASSPHRASE, FixedClock
from tests.integration.world import DEPLOY, World, claims_of
from tests.keys_helpers import ROTATION, kids, verify

KEK = base64.b64encode(b"k" * 32).decode()
OTHER_KEK = base64.b64encode(b"o" * 32).decode()
OTHER_PASSPHRASE = "another replica's passphrase"
SECRETS = (TEST_PASSPHRASE, OTHER_PASSPHRASE, KEK, OTHER_KEK)


@pytest.fixture(params=["file", "database"])
def app(request, empty_database_url, make_settings, clock) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """The world's app, with private keys in files (passphrase) or in rows (KEK)."""
    settings = make_settings(empty_database_url, keystore=request.param, key_encryption_key=KEK)
    application = create_app(settings, clock=clock)
    yield application
    application.extensions["sts"].engine.dispose()


def keystore_of(services: Services, secret: str) -> KeyStore:
    """The app's kind of keystore, under ``secret`` (the right one or another replica's)."""
    if services.settings.keystore == "database":
        return DatabaseKeyStore(base64.b64decode(secret))
    return FileKeyStore(services.settings.keys_dir, secret)


def right_secret(services: Services) -> str:
    return KEK if services.settings.keystore == "database" else TEST_PASSPHRASE


def wrong_secret(services: Services) -> str:
    return OTHER_KEK if services.settings.keystore == "database" else OTHER_PASSPHRASE


def activate_successor(services: Services, clock: FixedClock, private_key: PrivateKey) -> str:
    """Publish ``private_key`` under another replica's secret and make it the active key,
    the way a rotation step does (the old key retires)."""
    other_replicas = keystore_of(services, wrong_secret(services))
    with services.session_factory() as session:
        kid = create_signing_key(session, other_replicas, "ES256", "pending", clock(), private_key)
        rows = {row.kid: row for row in session.scalars(select(SigningKey))}
        (old,) = [row for row in rows.values() if row.state == "active"]
        activate(rows[kid], old, clock())
        session.commit()
    return kid


def store_under_the_right_secret(services: Services, kid: str, private_key: PrivateKey) -> None:
    """The operator's fix: the key rewritten under this replica's secret."""
    blob = keystore_of(services, right_secret(services)).store(kid, private_key, overwrite=True)
    with services.session_factory() as session:
        row = session.get(SigningKey, kid)
        assert row is not None
        row.encrypted_private_key = blob
        session.commit()


def make_unloadable(services: Services, kid: str, damage: str) -> None:
    """``other_secret``: as written (another replica's secret). ``missing``: gone too."""
    if damage == "missing":
        if services.settings.keystore == "database":
            with services.session_factory() as session:
                row = session.get(SigningKey, kid)
                assert row is not None
                row.encrypted_private_key = None  # no key files to fall back on either
                session.commit()
        else:
            services.settings.keys_dir.joinpath(f"{kid}.pem").unlink()


def signed_kid(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def refresh_due(world: World) -> None:
    world.clock.advance(world.app.extensions["sts"].settings.key_refresh_interval + 1)


def key_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "sts.keys.keyring" and record.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("damage", ["other_secret", "missing"])
def test_an_active_key_that_cannot_be_loaded_refuses_then_recovers(
    world: World, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    caplog.set_level(logging.INFO)
    services = world.app.extensions["sts"]
    old = services.keyring.signing_key().kid
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    private_key = generate_private_key("ES256")
    new = activate_successor(services, world.clock, private_key)
    make_unloadable(services, new, damage)
    refresh_due(world)

    for _ in range(3):  # refused every time; no token signed by the retired key
        response = world.exchange(world.ci_token(), audience=DEPLOY)
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"] == "temporarily_unavailable"
        assert "access_token" not in response.json
        assert world.audit_rows()[-1]["reason"] == "keys.no_active_key"
        ready = world.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"] == {
            "database": "ok",
            "signing_key": "unavailable",
            "rules": "ok",
            "key_sets": "ok",
        }
        assert kids(world.client.get("/jwks.json").json) == {old, new}  # as the database has it
        refresh_due(world)

    (warning,) = key_warnings(caplog)  # once per failure, not per request or refresh
    assert f"signing key {new}, active in the database, cannot be loaded (StartupError: " in (
        warning
    )
    if services.settings.keystore == "file":
        assert str(services.settings.keys_dir / f"{new}.pem") in warning
    for secret in SECRETS:
        assert secret not in caplog.text

    store_under_the_right_secret(services, new, private_key)
    refresh_due(world)
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    assert response.status_code == 200, response.get_data(as_text=True)
    token = response.json["access_token"]
    assert signed_kid(token) == new
    assert (
        verify(token, world.client.get("/jwks.json").json, "ES256")["sub"]
        == (claims_of(token)["sub"])
    )
    assert world.client.get("/readyz").status_code == 200
    assert f"key ring: resolved: signing key {new}" in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text


def test_a_failed_rotation_step_does_not_freeze_the_key_ring(
    empty_database_url: str,
    make_settings,  # type: ignore[no-untyped-def]
    clock: FixedClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The keystore cannot take a new key (here its directory is gone, a file in its
    place) while the schedule wants one: the step fails, but the key ring still follows
    the database, so a pending key marked compromised meanwhile leaves this JWKS."""
    caplog.set_level(logging.INFO)
    settings = make_settings(empty_database_url, **ROTATION)
    app = create_app(settings, clock=clock)
    services = app.extensions["sts"]
    client = app.test_client()
    try:
        active = services.keyring.signing_key().kid
        clock.advance(2960)  # the successor's publication is due
        (pending,) = kids(client.get("/jwks.json").json) - {active}
        moved = tmp_path / "keys-moved"
        settings.keys_dir.rename(moved)
        settings.keys_dir.write_text("not a directory")
        compromise(
            services.session_factory, FileKeyStore(moved, TEST_PASSPHRASE), "ES256", pending, clock
        )
        clock.advance(settings.key_refresh_interval + 1)  # publishing a successor is due again

        assert kids(client.get("/jwks.json").json) == {active}
        assert services.keyring.signing_key().kid == active
        assert client.get("/readyz").status_code == 200
        clock.advance(settings.key_refresh_interval + 1)
        assert kids(client.get("/jwks.json").json) == {active}
        (warning,) = key_warnings(caplog)
        assert warning.startswith("key ring: key rotation step failed (FileExistsError: ")
    finally:
        services.engine.dispose()


def set_reachable(database_url: str, reachable: bool) -> None:
    """PostgreSQL: refuse connections and end those open (or allow them again). SQLite,
    which has no server to take down: the key table is renamed away (or back)."""
    if database_url.startswith("sqlite"):
        names = ("signing_keys_away", "signing_keys")
        old, new = names if reachable else names[::-1]
        engine = create_engine(database_url)
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
        engine.dispose()
        return
    database = make_url(database_url).database
    admin = create_engine(
        str(make_url(database_url).set(database="test")), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        allow = "true" if reachable else "false"
        connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {allow}'))
        if not reachable:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": database},
            )
    admin.dispose()


def test_database_down_keeps_the_last_keys_loaded(
    world: World, empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    services = world.app.extensions["sts"]
    before = world.client.get("/jwks.json").json
    active = services.keyring.signing_key().kid
    set_reachable(empty_database_url, False)
    try:
        for _ in range(3):
            refresh_due(world)
            assert world.client.get("/jwks.json").json == before
            assert services.keyring.signing_key().kid == active
    finally:
        set_reachable(empty_database_url, True)
    (warning,) = key_warnings(caplog)  # the cause, once per outage
    assert warning.startswith("key ring: key refresh failed: database unavailable (")
    assert "Error); keeping the keys loaded at " in warning
    refresh_due(world)
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "key ring: resolved: key refresh failed: database unavailable" in caplog.text
