"""Attacks on subject and actor tokens: each refused with the right error, and recorded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_API_KEY, TOKEN_TYPE_JWT
from tests.integration.world import DEPLOY, PROJECT, World
from tests.issuer import TestIssuer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def forge(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), signature])


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(unb64(h)), json.loads(unb64(p)), s


def alg_none(world: World) -> str:
    header, claims, _ = parts(world.ci_token())
    return forge({**header, "alg": "none"}, claims)


def hs256_with_public_key(world: World) -> str:
    """The classic key-confusion attack: HMAC keyed with the issuer's public key."""
    header, claims, _ = parts(world.ci_token())
    header = {**header, "alg": "HS256"}
    secret = json.dumps(world.ci.public_jwks()["keys"][0]).encode()
    signing_input = ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode())])
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def unknown_kid(world: World) -> str:
    return world.ci.mint(
        now=world.now(),
        header={"kid": "not-a-known-kid"},
        repository="acme/payments",
        ref="refs/heads/main",
        environment="production",
    )


def tampered_payload(world: World) -> str:
    token = world.ci_token()
    header, claims, signature = parts(token)
    claims["repository"] = "acme/payments"
    claims["sub"] = "repo:acme/payments:environment:production"
    claims["ref"] = "refs/heads/main"
    claims["exp"] = claims["exp"] + 3600  # any change breaks the signature
    return forge(header, claims, signature)


def stripped_signature(world: World) -> str:
    header_part, payload_part, _ = world.ci_token().split(".")
    return f"{header_part}.{payload_part}."


def wrong_issuer(world: World) -> str:
    stranger = TestIssuer("https://evil.example")
    return stranger.mint(now=world.now())


def issuer_spoofed_with_other_key(world: World) -> str:
    # Claims to be the trusted CI issuer, signed by another key with the same kid.
    stranger = TestIssuer(world.ci.issuer)
    stranger.kid = world.ci.kid
    return stranger.mint(
        now=world.now(), repository="acme/payments", ref="refs/heads/main", environment="production"
    )


def wrong_audience(world: World) -> str:
    return world.ci_token(aud="https://some-other-service")


def expired(world: World) -> str:
    return world.ci.mint(
        now=world.now() - 3600,
        lifetime=600,
        repository="acme/payments",
        ref="refs/heads/main",
        environment="production",
    )


def not_yet_valid(world: World) -> str:
    return world.ci_token(nbf=world.now() + 3600)


def issued_in_future(world: World) -> str:
    return world.ci_token(iat=world.now() + 3600)


def unknown_crit(world: World) -> str:
    header, claims, _ = parts(world.ci_token())
    header.update({"crit": ["urn:example:unknown"], "urn:example:unknown": 1})
    return world.ci.mint_raw(header, claims)


def missing_exp(world: World) -> str:
    return world.ci_token(exp=None)


ATTACKS: list[tuple[str, Callable[[World], str], str]] = [
    ("alg-none", alg_none, "subject.alg"),
    ("hs256-public-key", hs256_with_public_key, "subject.alg"),
    ("unknown-kid", unknown_kid, "subject.unknown_kid"),
    ("tampered-payload", tampered_payload, "subject.signature"),
    ("stripped-signature", stripped_signature, "subject."),
    ("untrusted-issuer", wrong_issuer, "subject.untrusted_issuer"),
    ("spoofed-issuer-key", issuer_spoofed_with_other_key, "subject.signature"),
    ("wrong-audience", wrong_audience, "subject.audience"),
    ("expired", expired, "subject.expired"),
    ("not-yet-valid", not_yet_valid, "subject.not_yet_valid"),
    ("issued-in-future", issued_in_future, "subject.issued_in_future"),
    ("crit-unknown", unknown_crit, "subject.crit"),
    ("missing-exp", missing_exp, "subject.missing_claim"),
    ("garbage", lambda world: "not-a-token", "subject.malformed"),
]


@pytest.mark.parametrize(("make", "reason"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_subject_token_attack_is_refused_and_recorded(
    world: World, make: Callable[[World], str], reason: str
) -> None:
    token = make(world)
    response = world.exchange(token, audience=DEPLOY)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_request"
    assert "access_token" not in response.json
    row = world.audit_rows()[-1]
    assert row["decision"] == "deny"
    assert row["reason"].startswith(reason), row
    assert token not in json.dumps(row, default=str)


@pytest.mark.parametrize("header_name", ["jku", "x5u", "jwk"])
def test_key_pointers_in_the_header_are_never_fetched(world: World, header_name: str) -> None:
    attacker = TestIssuer(world.ci.issuer)  # signs with its own key, claims the CI issuer
    with attacker.serve() as attacker_url:
        pointer: Any = attacker_url
        if header_name == "jwk":
            pointer = attacker.public_jwks()["keys"][0]
        token = attacker.mint(
            now=world.now(),
            header={header_name: pointer, "kid": attacker.kid},
            repository="acme/payments",
            ref="refs/heads/main",
            environment="production",
        )
        response = world.exchange(token, audience=DEPLOY)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert attacker.fetches == 0  # nothing was fetched from where the token pointed


def test_unknown_kid_refetches_the_issuer_jwks_at_most_once_per_interval(world: World) -> None:
    cache = world.app.extensions["sts"].issuer_keys
    seconds = [1000.0]
    cache.monotonic = lambda: seconds[0]
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    fetched = world.ci.fetches
    world.ci.rotate()  # the issuer rotated: a new kid
    seconds[0] += 5  # within the minimum refresh interval (30 s): no re-fetch yet
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 400
    assert world.ci.fetches == fetched
    seconds[0] += 30  # past the interval: the unknown kid triggers exactly one re-fetch
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert world.ci.fetches == fetched + 1
    for _ in range(5):  # a flood of junk kids does not hammer the issuer
        world.exchange(unknown_kid(world), audience=DEPLOY)
    assert world.ci.fetches == fetched + 1


def test_an_inline_jwks_replaced_by_the_operator_takes_effect_at_the_next_reload(
    world: World,
) -> None:
    """The agents issuer's keys are inline (in the database). When the operator replaces
    them (a rules revision runs ``put_issuer``), the next load of the trust configuration
    must stop trusting the old key and start trusting the new one, without a restart: the
    imported key set is cached per issuer, keyed by the configuration's JWKS mapping."""
    from sts.db import admin
    from tests.conftest import TEST_ISSUER

    def agent_exchange(token: str) -> Any:
        return world.agent_exchange(token, audience=PROJECT, scope="issues:write")

    assert agent_exchange(world.agent_token()).status_code == 200
    signed_by_old_key = world.agent_token()
    world.agents.rotate()
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        admin.put_issuer(
            session,
            name="agents",
            issuer=world.agents.issuer,
            jwks=world.agents.public_jwks(),
            algorithms=["ES256"],
            audiences=[TEST_ISSUER],
            now=world.clock(),
        )
        session.commit()
    services.trust.invalidate()  # the refresh interval has passed
    refused = agent_exchange(signed_by_old_key)
    assert refused.status_code == 400
    assert refused.json is not None
    assert refused.json["error"] == "invalid_request"
    assert "unknown key" in refused.json["error_description"]
    assert agent_exchange(world.agent_token()).status_code == 200


def test_concurrent_first_exchanges_share_one_jwks_fetch(world: World) -> None:
    """Exchanges that arrive together on a cold cache wait for the one fetch and use it
    (they used to get 503: the waiting threads saw "fetched too recently" and no entry)."""
    cache = world.app.extensions["sts"].issuer_keys
    cache.monotonic = lambda: 1000.0  # every thread sees the same moment
    fetch = cache._fetcher

    def slow_fetch(uri: str, timeout: float) -> Any:
        time.sleep(0.2)  # the others arrive while this fetch is on the wire
        return fetch(uri, timeout)

    cache._fetcher = slow_fetch
    tokens = [world.ci_token() for _ in range(4)]
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda token=token: statuses.append(
                world.exchange(token, audience=DEPLOY).status_code
            )
        )
        for token in tokens
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses == [200] * 4
    assert world.ci.fetches == 1


def test_tokens_naming_a_down_issuer_cost_it_one_fetch_per_interval(world: World) -> None:
    """With nothing cached and the issuer's endpoint failing, tokens with made-up kids are
    answered temporarily_unavailable (fail closed) and cause one fetch per minimum refresh
    interval, not one each."""
    cache = world.app.extensions["sts"].issuer_keys
    cache.monotonic = lambda: 1000.0
    world.ci.response = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    for _ in range(5):
        response = world.exchange(unknown_kid(world), audience=DEPLOY)
        assert response.status_code == 503
        assert response.json["error"] == "temporarily_unavailable"
    assert world.ci.fetches == 1


def test_a_token_with_an_algorithm_its_issuer_does_not_use_costs_no_fetch(world: World) -> None:
    """The algorithm is checked against the issuer's registration before its keys are
    looked up: junk tokens do not make sts fetch the issuer's JWKS."""
    for make in (alg_none, hs256_with_public_key):
        response = world.exchange(make(world), audience=DEPLOY)
        assert response.status_code == 400
        assert world.audit_rows()[-1]["reason"] == "subject.alg"
    assert world.ci.fetches == 0


def test_an_issuer_key_on_an_unknown_curve_is_skipped_not_the_issuers_keys(world: World) -> None:
    """RFC 7517 §5: a key whose ``crv`` sts does not understand is ignored; the issuer's
    other keys still verify its tokens (it used to be a 500)."""
    world.ci.extra_jwks = [{"kty": "EC", "crv": "BP-256", "x": "AA", "y": "AA", "kid": "bp"}]
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200


def test_own_token_for_a_different_audience_chain(world: World) -> None:
    """A deploy token cannot be re-exchanged for a vault token: the parent never allowed it."""
    deploy_token = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    response = world.workload_exchange(deploy_token, audience="https://vault.acme.internal")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_target"
    assert (
        world.audit_rows()[-1]["reason"]
        == "policy.target: 'https://vault.acme.internal' not allowed by the subject token"
    )


def test_own_token_signed_by_someone_else(world: World) -> None:
    deploy_token = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    header, claims, _ = parts(deploy_token)
    forger = TestIssuer("https://sts.test")
    forged = forger.mint(
        now=world.now(),
        header={"typ": "at+jwt", "kid": header["kid"]},
        sub=claims["sub"],
        aud=claims["aud"],
        scope="deploy:write deploy:read",
    )
    response = world.workload_exchange(forged, audience=DEPLOY)
    assert response.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "subject.signature"


def test_disabled_credential_is_refused(world: World) -> None:
    from sqlalchemy import update

    from sts.db.models import ServiceCredential

    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        session.execute(update(ServiceCredential).values(disabled=True))
        session.commit()
    response = world.agent_exchange(world.agent_token(), audience=PROJECT, scope="issues:write")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert world.audit_rows()[-1]["reason"] == "subject.credential_disabled"


def test_credential_with_a_wrong_secret_is_refused(world: World) -> None:
    from sts.credentials import generate_api_key

    other = generate_api_key().key  # well formed, unknown key id
    response = world.exchange(
        other,
        TOKEN_TYPE_API_KEY,
        auth=None,
        form=[
            ("client_id", "agent-runtime"),
            ("client_secret", "agent-runtime-secret-0123456789abcdef"),
        ],
    )
    assert response.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "subject.credential_unknown"


@pytest.mark.parametrize(
    ("token_kind", "declared"),
    [("api_key", TOKEN_TYPE_JWT), ("ci", TOKEN_TYPE_API_KEY), ("ci", TOKEN_TYPE_ACCESS_TOKEN)],
    ids=["api-key-declared-jwt", "jwt-declared-api-key", "external-declared-own-access-token"],
)
def test_declared_type_never_chooses_the_path(world: World, token_kind: str, declared: str) -> None:
    token = world.api_key if token_kind == "api_key" else world.ci_token()
    response = world.exchange(token, declared, audience=DEPLOY)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("make", "reason"), [a[1:] for a in ATTACKS[:4]], ids=[a[0] for a in ATTACKS[:4]]
)
def test_actor_token_attacks(world: World, make: Callable[[World], str], reason: str) -> None:
    # Actor tokens go through the same verification (here: forged from a CI token shape).
    bad_actor = make(world)
    response = world.agent_exchange(bad_actor, audience=PROJECT, scope="issues:write")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert world.audit_rows()[-1]["reason"].startswith(reason.replace("subject", "actor"))
