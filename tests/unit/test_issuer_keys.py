"""Issuer key sets (``IssuerKeyCache``): inline ones imported once per trust
configuration and replaced when the configuration's keys change; inline or fetched, only
the public asymmetric keys sts can use kept, one key at a time."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
from joserfc.jwk import ECKey, OctKey

from sts.tokens.issuer_keys import IssuerKeyCache
from sts.trust import IssuerConfig
from tests.issuer import TestIssuer


def public_jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def issuer(
    jwks: dict[str, Any] | None, issuer_id: int = 1, jwks_uri: str | None = None
) -> IssuerConfig:
    """An issuer with inline keys (``jwks``) or keys at ``jwks_uri``."""
    return IssuerConfig(
        id=issuer_id,
        name=f"ci-{issuer_id}",
        issuer=f"https://issuer-{issuer_id}.example",
        jwks=jwks,
        jwks_uri=jwks_uri,
        algorithms=("ES256",),
        audiences=("sts",),
    )


def cache() -> IssuerKeyCache:
    def no_fetch(_uri: str, _timeout: float) -> dict[str, Any]:
        raise AssertionError("an inline JWKS is never fetched")

    return IssuerKeyCache(timeout=1, cache_ttl=60, min_refresh=5, fetcher=no_fetch)


def kids(keys: Any) -> set[str]:
    return {key.kid for key in keys.keys}


def test_the_same_configuration_imports_its_keys_once() -> None:
    keys = cache()
    config = issuer(public_jwks(ECKey.generate_key("P-256", auto_kid=True)))
    first = keys.key_set(config, None)
    assert keys.key_set(config, None) is first


def test_a_reloaded_configuration_with_new_keys_gets_the_new_keys() -> None:
    keys = cache()
    old, new = (ECKey.generate_key("P-256", auto_kid=True) for _ in range(2))
    assert kids(keys.key_set(issuer(public_jwks(old)), None)) == {old.kid}
    # The issuer's row was updated: the next load of the trust configuration has a new
    # mapping for the same issuer id, and the old key must stop verifying at once.
    assert kids(keys.key_set(issuer(public_jwks(new)), None)) == {new.kid}


def test_issuers_do_not_share_key_sets() -> None:
    keys = cache()
    one, two = (ECKey.generate_key("P-256", auto_kid=True) for _ in range(2))
    first, second = issuer(public_jwks(one), 1), issuer(public_jwks(two), 2)
    assert kids(keys.key_set(first, None)) == {one.kid}
    assert kids(keys.key_set(second, None)) == {two.kid}
    assert kids(keys.key_set(first, None)) == {one.kid}


def test_private_and_symmetric_keys_in_an_inline_jwks_are_not_trusted() -> None:
    public = ECKey.generate_key("P-256", auto_kid=True)
    private = ECKey.generate_key("P-256", auto_kid=True)
    secret = OctKey.generate_key(256, auto_kid=True)
    jwks = {
        "keys": [
            public.as_dict(private=False),
            private.as_dict(private=True),
            secret.as_dict(private=True),
        ]
    }
    assert kids(cache().key_set(issuer(jwks), None)) == {public.kid}


def unusable_keys() -> list[tuple[str, dict[str, Any]]]:
    """Keys sts cannot use, each next to one it can (whose x and y some of them borrow)."""
    usable = ECKey.generate_key("P-256").as_dict(private=False)
    x, y = usable["x"], usable["y"]
    x25519_x = "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"  # RFC 7748 §6.1's public key
    return [
        ("unregistered-curve", {"kty": "EC", "crv": "BP-256", "x": "AA", "y": "AA"}),
        ("curve-of-no-accepted-alg", {"kty": "EC", "crv": "secp256k1", "x": x, "y": y}),
        ("key-agreement-curve", {"kty": "OKP", "crv": "X25519", "x": x25519_x}),
        ("curve-not-a-string", {"kty": "EC", "crv": ["P-256"], "x": x, "y": y}),
        ("point-off-the-curve", {"kty": "EC", "crv": "P-256", "x": x, "y": x}),
        ("missing-coordinate", {"kty": "EC", "crv": "P-256", "x": x}),
        ("rsa-modulus-too-small", {"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        ("rsa-not-base64url", {"kty": "RSA", "n": "!!!", "e": "AQAB"}),
        ("kid-not-a-string", {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": 5}),
        ("unknown-kty", {"kty": "ML-DSA", "pub": "AA"}),
        ("not-an-object", "a string"),
    ]


UNUSABLE = unusable_keys()


@pytest.mark.parametrize("source", ["inline", "jwks_uri"])
@pytest.mark.parametrize("unusable", [u[1] for u in UNUSABLE], ids=[u[0] for u in UNUSABLE])
def test_a_key_that_cannot_be_used_is_skipped_not_the_whole_set(
    source: str, unusable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 7517 §5: a JWK Set's user ignores a key it does not understand (its ``kty``,
    its ``crv``), and sts ignores one it cannot import: the issuer's other keys still
    verify. One bad key used to fail the whole set (a 500 at /token)."""
    issuer = TestIssuer()
    issuer.extra_jwks = [unusable]
    with caplog.at_level(logging.WARNING, logger="sts.tokens.issuer_keys"):
        if source == "inline":
            keys = cache().key_set(config_of(issuer), None)
        else:
            with issuer.serve() as url:
                keys = IssuerKeyCache(timeout=2, cache_ttl=60, min_refresh=5).key_set(
                    replace(config_of(issuer), jwks=None, jwks_uri=url), issuer.kid
                )
    assert kids(keys) == {issuer.kid}
    assert "1 of 2 keys skipped" in caplog.text


def config_of(test_issuer: TestIssuer) -> IssuerConfig:
    return replace(issuer(test_issuer.public_jwks()), issuer=test_issuer.issuer)


def test_an_inline_jwks_with_no_usable_key_verifies_nothing() -> None:
    """Fail closed: the issuer's tokens are refused as signed with an unknown key."""
    jwks = {"keys": [{"kty": "EC", "crv": "BP-256", "x": "AA", "y": "AA"}]}
    assert kids(cache().key_set(issuer(jwks), None)) == set()
