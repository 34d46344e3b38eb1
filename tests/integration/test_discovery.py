"""RFC 8414 metadata, RFC 7517 JWKS, health and readiness."""

from __future__ import annotations

import jwt as pyjwt
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from tests.conftest import TEST_ISSUER


def test_metadata_describes_the_server(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.json
    assert document["issuer"] == TEST_ISSUER
    assert document["token_endpoint"] == TEST_ISSUER + "/token"
    assert document["jwks_uri"] == TEST_ISSUER + "/jwks.json"
    assert document["grant_types_supported"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    assert "none" not in document["token_endpoint_auth_signing_alg_values_supported"]
    assert (
        "urn:sts:params:oauth:token-type:api-key"
        in document["token_exchange_subject_token_types_supported"]
    )
    # Authlib's RFC 8414 validator, minus response_types_supported: sts has no
    # authorization endpoint and publishes an empty list (see endpoints/metadata.py).
    metadata = AuthorizationServerMetadata(document)
    for name in dir(metadata):
        if name.startswith("validate_") and name != "validate_response_types_supported":
            getattr(metadata, name)()
    assert document["response_types_supported"] == []


def test_jwks_has_cache_lifetime_and_public_keys_only(client, app) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/jwks.json")
    assert response.status_code == 200
    max_age = app.extensions["sts"].settings.jwks_cache_max_age  # derived: lead time / 2
    assert response.headers["Cache-Control"] == f"public, max-age={max_age}"
    for key in response.json["keys"]:
        assert {"kid", "alg", "use", "kty"} <= set(key)
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_published_key_verifies_a_signature_with_an_independent_library(client, app) -> None:  # type: ignore[no-untyped-def]
    """Sign with sts's private key (via its key ring), verify with PyJWT from the JWKS."""
    from joserfc import jwt as jose_jwt

    active = app.extensions["sts"].keyring.signing_key()
    token = jose_jwt.encode({"alg": active.alg, "kid": active.kid}, {"hello": "world"}, active.key)
    jwks = pyjwt.PyJWKSet.from_dict(client.get("/jwks.json").json)
    header = pyjwt.get_unverified_header(token)
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = pyjwt.decode(token, key=key, algorithms=["ES256"])
    assert claims == {"hello": "world"}
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    try:
        pyjwt.decode(tampered, key=key, algorithms=["ES256"])
    except pyjwt.InvalidSignatureError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a tampered signature verified")


def test_health_and_readiness(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {
        "status": "ready",
        "checks": {"database": "ok", "signing_key": "ok", "rules": "ok", "key_sets": "ok"},
    }


def test_an_issuer_with_a_path_is_described_where_rfc_8414_puts_it(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings
) -> None:
    """RFC 8414 §3: the well-known string goes between the host and the issuer's path,
    and the document's issuer is the issuer the URL was built from (§3.3)."""
    from sts.app import create_app

    issuer = "https://sts.test/tenant-a"
    app = create_app(make_settings(empty_database_url, issuer=issuer))
    try:
        client = app.test_client()
        inserted = client.get("/.well-known/oauth-authorization-server/tenant-a")
        assert inserted.status_code == 200
        assert inserted.json["issuer"] == issuer
        assert inserted.json["token_endpoint"] == issuer + "/token"
        appended = client.get("/.well-known/oauth-authorization-server")  # mounted at /tenant-a
        assert appended.json == inserted.json
        assert client.get("/.well-known/oauth-authorization-server/tenant-b").status_code == 404
    finally:
        app.extensions["sts"].engine.dispose()
