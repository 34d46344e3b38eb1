"""Rotation end to end, on SQLite and PostgreSQL, driven by the fixed clock: two replicas
share one database, sign, serve JWKS, rotate by themselves and for each other."""

from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from sts.app import create_app
from sts.db import queries
from sts.db.models import SigningKey
from sts.errors import ConfigurationError
from sts.keys.keystore import make_keystore
from sts.keys.lifecycle import KeyLifecycleError, retire
from sts.keys.rotation import Schedule
from sts.settings import Settings
from tests.conftest import TEST_ISSUER, FixedClock
from tests.keys_helpers import ROTATION, kids, sign, verify

STEP = 15  # seconds between two requests in the simulation
REPLICA_OFFSET = 20  # the second replica starts later: the replicas refresh out of step
PERIODS = 3


@dataclass(frozen=True)
class Issued:
    token: str
    kid: str
    alg: str
    iat: datetime
    exp: datetime


@dataclass(frozen=True)
class Fetched:
    at: datetime
    jwks: dict[str, Any]
    max_age: int


def max_age_of(cache_control: str) -> int:
    (value,) = [p.split("=")[1] for p in cache_control.split(", ") if p.startswith("max-age=")]
    return int(value)


def db_active(app: Flask) -> SigningKey:
    with app.extensions["sts"].session_factory() as session:
        row = queries.active_signing_key(session)
    assert row is not None
    return row


def test_tokens_verify_through_several_rotations(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, clock: FixedClock
) -> None:
    """Both replicas sign and serve the JWKS every STEP seconds, out of step with each other;
    every token must verify from issue to expiry against any JWKS served meanwhile, and its
    kid must have been in every JWKS served during the lead time before it signed."""
    # Half-hour periods: three rotations in fewer simulated requests.
    settings = make_settings(empty_database_url, **{**ROTATION, "key_active_period": 1800})
    replicas = [create_app(settings, clock=clock)]
    clock.advance(REPLICA_OFFSET)
    replicas.append(create_app(settings, clock=clock))
    lag = timedelta(seconds=settings.key_refresh_interval)
    issued: list[Issued] = []
    fetched: list[Fetched] = []
    try:
        for _ in range(PERIODS * settings.key_active_period // STEP):
            now = clock()
            signing = [replica.extensions["sts"].keyring.signing_key() for replica in replicas]
            truth = db_active(replicas[0])
            for active in signing:
                # Every replica signs with the key the database says is active, or with
                # its predecessor for less than the refresh interval after the switch.
                assert active.kid == truth.kid or now - truth.activated_at < lag  # type: ignore[operator]
                exp = now + timedelta(seconds=settings.max_token_ttl)
                claims = {
                    "iss": TEST_ISSUER,
                    "iat": int(now.timestamp()),
                    "exp": int(exp.timestamp()),
                }
                issued.append(Issued(sign(active, claims), active.kid, active.alg, now, exp))
            for replica in replicas:
                response = replica.test_client().get("/jwks.json")
                assert response.status_code == 200
                max_age = max_age_of(response.headers["Cache-Control"])
                fetched.append(Fetched(now, response.json, max_age))
            clock.advance(STEP)
    finally:
        for replica in replicas:
            replica.extensions["sts"].engine.dispose()

    assert len({token.kid for token in issued}) == PERIODS, "one new key per period"
    assert {f.max_age for f in fetched} == {settings.jwks_cache_max_age} == {300}
    check_every_token_against_every_jwks(issued, fetched, settings.key_publish_lead_time)


def check_every_token_against_every_jwks(
    issued: list[Issued], fetched: list[Fetched], lead_seconds: int
) -> None:
    lead = timedelta(seconds=lead_seconds)
    times = [document.at for document in fetched]
    published = [kids(document.jwks) for document in fetched]
    for token in issued:
        first = bisect.bisect_left(times, token.iat - lead)
        last = bisect.bisect_right(times, token.exp)
        verified: set[frozenset[str]] = set()  # each distinct key set once per token
        for index in range(first, last):
            document = fetched[index]
            # Before it signed: in every JWKS served for the whole lead time, hence in any
            # JWKS a verifier may still cache (max-age <= lead time). From issue to expiry:
            # in every JWKS served, and it verifies against it.
            assert token.kid in published[index], (token.kid, token.iat, document.at)
            key_set = frozenset(published[index])
            if document.at >= token.iat and key_set not in verified:
                assert verify(token.token, document.jwks, token.alg)["iss"] == TEST_ISSUER
                verified.add(key_set)


def test_two_instances_rotate_concurrently(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, clock: FixedClock, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sts.keys.lifecycle")
    settings = make_settings(empty_database_url, **ROTATION)
    apps = [create_app(settings, clock=clock), create_app(settings, clock=clock)]
    errors: list[BaseException] = []

    def refresh_at_once() -> None:
        barrier = threading.Barrier(len(apps))

        def refresh(app: Flask) -> None:
            try:
                barrier.wait(timeout=10)
                app.extensions["sts"].keyring.load()  # the service path: plans, rotates
            except BaseException as exc:  # report any error to the test thread
                errors.append(exc)

        threads = [threading.Thread(target=refresh, args=(app,)) for app in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    def count(state: str) -> int:
        with apps[0].extensions["sts"].session_factory() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(SigningKey).where(SigningKey.state == state)
                )
                or 0
            )

    try:
        first = apps[0].extensions["sts"].keyring.signing_key().kid
        clock.advance(3600 - 600 - 45)  # the successor is due to be published
        refresh_at_once()
        assert (count("pending"), count("active")) == (1, 1)
        clock.advance(600 + 45)  # the successor is due to sign
        refresh_at_once()
        assert (count("pending"), count("active"), count("retired")) == (0, 1, 1)
        assert errors == []
        # Each step was performed once, by one of the two.
        steps = [
            r.getMessage().split()[2] for r in caplog.records if "key rotation:" in r.getMessage()
        ]
        assert steps == ["published", "activated"]
        signing = {app.extensions["sts"].keyring.signing_key().kid for app in apps}
        assert len(signing) == 1
        assert first not in signing
    finally:
        for app in apps:
            app.extensions["sts"].engine.dispose()


def test_retire_hands_over_only_to_a_key_published_for_the_lead_time(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, clock: FixedClock
) -> None:
    settings = make_settings(empty_database_url, **ROTATION)
    app = create_app(settings, clock=clock)
    services = app.extensions["sts"]
    schedule = Schedule.from_settings(settings)
    keystore = make_keystore(settings)
    old = services.keyring.signing_key().kid
    try:
        with pytest.raises(KeyLifecycleError) as caught:
            retire(services.session_factory, keystore, schedule, old, clock)
        message = str(caught.value)
        assert message.startswith(f"cannot retire the active key {old} yet: its successor")
        assert "run this again after 2026-11-28T12:10:45Z" in message
        services.keyring.load()
        assert services.keyring.signing_key().kid == old  # still signing
        (successor,) = kids(services.keyring.jwks()) - {old}

        clock.advance(600 + 45)
        message = retire(services.session_factory, keystore, schedule, old, clock)
        assert message == f"retired {old}; {successor} signs from now on"
        services.keyring.load()
        assert services.keyring.signing_key().kid == successor
        assert kids(services.keyring.jwks()) == {old, successor}  # retired: still published
        with pytest.raises(KeyLifecycleError, match=f"signing key {old} is retired; only"):
            retire(services.session_factory, keystore, schedule, old, clock)
    finally:
        services.engine.dispose()


def test_service_refuses_to_start_with_an_unsafe_schedule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Built by hand, so not validated by Settings.from_env: create_app still refuses.
    unsafe = Settings(
        issuer=TEST_ISSUER,
        database_url=f"sqlite:///{tmp_path / 'sts.db'}",
        instance_dir=tmp_path / "instance",
        keys_dir=tmp_path / "keys",
        key_passphrase="correct horse battery staple",
        key_retention=600,
    )
    with pytest.raises(ConfigurationError, match=r"^STS_KEY_RETENTION \(600s\) must be at least"):
        create_app(unsafe)
    assert not (tmp_path / "keys").exists()  # refused before touching anything
