"""DPoP (RFC 9449) through a real ``sts serve`` on each HTTP server, with a rule that
requires it applied as a reviewed rules migration: the header reaches the exchange, a
proof for the public token endpoint binds the token, and two ``DPoP`` headers (which a
server joins into one value) are refused (§4.3 check 1)."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from sts.db.engine import make_engine
from sts.db.migrate import alembic_config, upgrade
from tests.integration.world import claims_of
from tests.issuer import TestIssuer
from tests.rules.test_live_effect import (
    BASIC_AUTH,
    DEPLOY,
    SECRET,
    apply_rules,
    exchange_body,
    rules_document,
    rules_service_env,
)
from tests.server import running_server
from tests.unit.test_example_dpop_client import load_example_client


def dpop_rules(issuer: TestIssuer) -> dict[str, Any]:
    document = rules_document(issuer, "refs/heads/main")
    rule = document["rules"][0]  # type: ignore[index]
    rule["allow"]["sender_constraint"] = "dpop"
    return document


def dpop_bound_client_rules(issuer: TestIssuer) -> dict[str, Any]:
    """The deploy rule as it is (a proof optional), for a client that always uses DPoP."""
    document = rules_document(issuer, "refs/heads/main")
    document["clients"][0]["dpop_bound_access_tokens"] = True  # type: ignore[index]
    return document


def dpop_service(
    database_url: str,
    tmp_path: Path,
    *,
    nonces: bool = False,
    rules: Callable[[TestIssuer], dict[str, Any]] = dpop_rules,
) -> tuple[dict[str, str], TestIssuer]:
    """A service's environment, on a schema at head with ``rules`` (the DPoP rule) applied
    as a rules migration (with server nonces: a secret), and the CI issuer it trusts."""
    env = rules_service_env(database_url, tmp_path)
    if nonces:
        env["STS_DPOP_NONCE_SECRET"] = uuid.uuid4().hex
    engine = make_engine(database_url)
    upgrade(alembic_config(engine), "schema@head")
    engine.dispose()
    issuer = TestIssuer("https://ci.issuer.test")
    apply_rules(env, tmp_path / "rules.yaml", rules(issuer), "Deploys need DPoP")
    return env, issuer


def deploy_body(issuer: TestIssuer) -> bytes:
    token = issuer.mint(repository="acme/payments", ref="refs/heads/main", lifetime=300)
    return exchange_body(token)


def proof(key: ECKey, now: int, **extra: str) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    claims = {"jti": uuid.uuid4().hex, "htm": "POST", "htu": "https://sts.test/token", "iat": now}
    claims.update(extra)
    return jwt.encode(header, claims, key, algorithms=["ES256"])


def post(base: str, body: bytes, dpop: list[str]) -> tuple[int, dict[str, Any]]:
    status, document, _ = post_reading_headers(base, body, dpop)
    return status, document


def assert_bound_to(key: ECKey, status: int, answer: dict[str, Any]) -> None:
    """A granted exchange whose token is DPoP-bound to ``key`` (RFC 9449 §5, §6.1)."""
    assert status == 200, answer
    assert answer["token_type"] == "DPoP"
    assert claims_of(answer["access_token"])["cnf"] == {"jkt": key.thumbprint()}


def post_reading_headers(
    base: str, body: bytes, dpop: list[str]
) -> tuple[int, dict[str, Any], http.client.HTTPMessage]:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    connection.putrequest("POST", "/token")
    connection.putheader("Content-Type", "application/x-www-form-urlencoded")
    connection.putheader("Content-Length", str(len(body)))
    connection.putheader("Authorization", BASIC_AUTH)
    for value in dpop:
        connection.putheader("DPoP", value)
    connection.endheaders(body)
    response = connection.getresponse()
    document = json.loads(response.read())
    connection.close()
    return response.status, document, response.headers


@pytest.mark.slow
@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_dpop_through_a_real_server(empty_database_url: str, tmp_path: Path, server: str) -> None:
    env, issuer = dpop_service(empty_database_url, tmp_path)
    key = ECKey.generate_key("P-256")

    with running_server(env, workers=1, args=("--server", server)) as base:
        status, bare = post(base, deploy_body(issuer), [])
        assert (status, bare["error"]) == (400, "invalid_dpop_proof")

        now = int(time.time())
        status, twice = post(base, deploy_body(issuer), [proof(key, now), proof(key, now)])
        assert (status, twice["error"]) == (400, "invalid_dpop_proof")
        assert "one DPoP header" in twice["error_description"]

        assert_bound_to(key, *post(base, deploy_body(issuer), [proof(key, now)]))


@pytest.mark.slow
@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_a_client_bound_to_dpop_through_a_real_server(
    empty_database_url: str, tmp_path: Path, server: str
) -> None:
    """``dpop_bound_access_tokens: true`` on the client, applied as a rules migration, and
    a rule that leaves the proof optional (RFC 9449 §5.2): the client's bearer request is
    refused, its request with a proof gets a bound token."""
    env, issuer = dpop_service(empty_database_url, tmp_path, rules=dpop_bound_client_rules)
    key = ECKey.generate_key("P-256")

    with running_server(env, workers=1, args=("--server", server)) as base:
        status, bare = post(base, deploy_body(issuer), [])
        assert (status, bare["error"]) == (400, "invalid_dpop_proof")
        assert "RFC 9449 §5.2" in bare["error_description"]

        assert_bound_to(key, *post(base, deploy_body(issuer), [proof(key, int(time.time()))]))


@pytest.mark.slow
@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_dpop_nonces_through_a_real_server(
    empty_database_url: str, tmp_path: Path, server: str
) -> None:
    """RFC 9449 §8 with two workers: the ``DPoP-Nonce`` header reaches the client on the
    refusal and on the grant, and the nonce is good on whichever worker a new connection
    lands (the shared secret is the only state)."""
    env, issuer = dpop_service(empty_database_url, tmp_path, nonces=True)
    key = ECKey.generate_key("P-256")

    with running_server(env, workers=2, args=("--server", server)) as base:
        status, refused, headers = post_reading_headers(
            base, deploy_body(issuer), [proof(key, int(time.time()))]
        )
        assert (status, refused["error"]) == (400, "use_dpop_nonce")
        nonce = headers["DPoP-Nonce"]
        assert nonce

        for _ in range(4):  # new connections: both workers answer some
            now = int(time.time())
            status, bound, headers = post_reading_headers(
                base, deploy_body(issuer), [proof(key, now, nonce=nonce)]
            )
            assert status == 200, bound
            assert bound["token_type"] == "DPoP"
            assert headers["DPoP-Nonce"]


@pytest.mark.slow
def test_the_example_client_gets_a_bound_token_with_nonces(
    empty_database_url: str, tmp_path: Path
) -> None:
    """examples/dpop_client.py against a real server that requires DPoP and nonces: the
    first exchange is asked for a nonce and retried once; the next one reuses the nonce
    it kept and needs no retry; both tokens are bound to the client's key."""
    client_module = load_example_client()
    env, issuer = dpop_service(empty_database_url, tmp_path, nonces=True)

    with running_server(env, workers=1) as base:
        session = client_module.DpopSession()
        answers = []
        for _ in range(2):
            token = issuer.mint(repository="acme/payments", ref="refs/heads/main", lifetime=300)
            answers.append(
                client_module.exchange(
                    session,
                    base + "/token",
                    ("runner", SECRET),
                    token,
                    DEPLOY,
                    public_url="https://sts.test/token",
                )
            )
    assert [(answer.status, answer.attempts) for answer in answers] == [(200, 2), (200, 1)]
    for answer in answers:
        assert answer.body["token_type"] == "DPoP"
        assert claims_of(answer.body["access_token"])["cnf"] == {"jkt": session.thumbprint}
    assert session.nonce is not None
