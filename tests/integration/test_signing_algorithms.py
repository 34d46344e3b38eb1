"""Every supported algorithm, verified by an independent JOSE library (PyJWT) from the
published JWKS (RFC 7517), as a relying party would."""

from __future__ import annotations

from pathlib import Path

import jwt as pyjwt
import pytest

from sts.app import create_app
from tests.conftest import TEST_ISSUER, FixedClock
from tests.keys_helpers import sign

EXPECTED_KEY_TYPES = {"ES256": "EC", "EdDSA": "OKP", "RS256": "RSA", "PS256": "RSA"}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256", "PS256"])
def test_pyjwt_verifies_each_algorithm_from_the_jwks(  # type: ignore[no-untyped-def]
    alg: str, tmp_path: Path, make_settings, clock: FixedClock
) -> None:
    # Not a storage test: one backend (SQLite) is enough to exercise the algorithms.
    settings = make_settings(f"sqlite:///{tmp_path / 'sts.db'}", signing_alg=alg)
    app = create_app(settings, clock=clock)
    try:
        active = app.extensions["sts"].keyring.signing_key()
        assert active.alg == alg
        claims = {"iss": TEST_ISSUER, "aud": "https://api.example", "sub": "ci", "exp": 4102444800}
        token = sign(active, claims)
        jwks = app.test_client().get("/jwks.json").json
        key_set = pyjwt.PyJWKSet.from_dict(jwks)
        (published,) = [key for key in key_set.keys if key.key_id == active.kid]
        assert published.key_type == EXPECTED_KEY_TYPES[alg]
        assert published.algorithm_name == alg
        if alg in ("RS256", "PS256"):
            assert published.key.key_size == 3072
        decoded = pyjwt.decode(
            token,
            published.key,
            algorithms=[alg],
            audience="https://api.example",
            issuer=TEST_ISSUER,
            options={"require": ["exp", "iss", "aud"]},
        )
        assert decoded == claims
        assert pyjwt.get_unverified_header(token)["kid"] == active.kid
    finally:
        app.extensions["sts"].engine.dispose()
