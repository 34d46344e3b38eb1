"""Inline issuer key sets (``IssuerKeyCache``): imported once per trust configuration,
replaced when the configuration's keys change, and only public asymmetric keys kept."""

from __future__ import annotations

from typing import Any

from joserfc.jwk import ECKey, OctKey

from sts.tokens.issuer_keys import IssuerKeyCache
from sts.trust import IssuerConfig


def public_jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def issuer(jwks: dict[str, Any], issuer_id: int = 1) -> IssuerConfig:
    return IssuerConfig(
        id=issuer_id,
        name=f"ci-{issuer_id}",
        issuer=f"https://issuer-{issuer_id}.example",
        jwks=jwks,
        jwks_uri=None,
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
