"""RFC 7009 revocation at POST /revoke: lineage-aware, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sts.grants.client_auth import JWT_BEARER_ASSERTION
from tests.conftest import TEST_ISSUER
from tests.integration.test_token_exchange import assert_error
from tests.integration.world import (
    AGENT_SECRET,
    CI_SECRET,
    DEPLOY,
    PROJECT,
    RS_SECRET,
    World,
    claims_of,
)


def test_revoking_the_root_revokes_the_whole_chain(world: World) -> None:
    tokens = world.chain()
    assert all(world.is_active(token) for token in tokens)

    response = world.revoke(tokens[0])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert [world.is_active(token) for token in tokens] == [False, False, False]
    # A revoked token cannot be exchanged again, nor can its descendants.
    again = world.workload_exchange(tokens[2], audience=DEPLOY)
    assert again.status_code == 400
    audit = [row for row in world.audit_rows() if row["event"] == "token_revocation"]
    assert len(audit) == 1
    assert audit[0]["subject_token_id"] == claims_of(tokens[0])["jti"]
    assert "revoked 3 token(s)" in audit[0]["detail"]


def assertion_form(world: World, aud: str) -> list[tuple[str, str]]:
    assertion = world.workload_assertion(aud=aud)
    return [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]


def test_revoking_a_middle_token_leaves_its_parent_alone(world: World) -> None:
    tokens = world.chain()
    form = assertion_form(world, TEST_ISSUER + "/revoke")  # private_key_jwt, RFC 7523

    response = world.revoke(tokens[1], auth=None, form=form)

    assert response.status_code == 200, response.json
    assert [world.is_active(token) for token in tokens] == [True, False, False]
    replayed = world.revoke(tokens[2], auth=None, form=form)
    assert replayed.status_code == 401
    assert replayed.json["error"] == "invalid_client"


def test_an_assertion_for_another_audience_is_refused(world: World) -> None:
    tokens = world.chain()
    response = world.revoke(tokens[1], auth=None, form=assertion_form(world, DEPLOY))
    assert response.status_code == 401
    assert world.is_active(tokens[1])


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "bogus", None])
def test_token_type_hint_is_only_a_hint(world: World, hint: str | None) -> None:
    token = world.chain()[0]
    params = {"token_type_hint": hint} if hint else {}
    assert world.revoke(token, **params).status_code == 200
    assert not world.is_active(token)


def test_unknown_and_invalid_tokens_answer_200(world: World) -> None:
    # RFC 7009 §2.2: invalid tokens do not cause an error response.
    external = world.ci_token()  # another issuer's token: nothing of ours to revoke
    for token in ["not-a-token", "a.b.c", external, "stsk_" + "0" * 50]:
        response = world.revoke(token)
        assert response.status_code == 200, (token, response.json)
        assert response.json == {}


def test_expired_token_answers_200(world: World) -> None:
    token = world.chain()[0]
    world.clock.advance(3600)
    assert world.revoke(token).status_code == 200


def test_a_client_cannot_revoke_another_clients_token(world: World) -> None:
    token = world.chain()[0]  # issued to ci-runner
    response = world.revoke(token, auth=("resource-server", RS_SECRET))
    assert response.status_code == 400
    assert response.json["error"] == "unauthorized_client"
    assert response.headers["Cache-Control"] == "no-store"
    assert world.is_active(token)


def test_revocation_requires_client_authentication(world: World) -> None:
    token = world.chain()[0]
    response = world.revoke(token, auth=None)
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    response = world.revoke(token, auth=("ci-runner", "wrong-secret-0123456789abcdef"))
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert world.is_active(token)


def test_revocation_refuses_a_malformed_request(world: World) -> None:
    response = world.client.post("/revoke", data="token=x", content_type="text/plain", headers={})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    missing = world.revoke("", auth=("ci-runner", CI_SECRET))
    assert missing.status_code == 400
    assert missing.json["error"] == "invalid_request"
    repeated = world.token_request(
        "/revoke", "x", auth=("ci-runner", CI_SECRET), form=[("token", "y")]
    )
    assert repeated.status_code == 400
    assert repeated.json["error"] == "invalid_request"


def test_presenting_a_service_credential_disables_it_and_its_tokens(world: World) -> None:
    issued = world.agent_exchange(world.agent_token(), audience=PROJECT)
    assert issued.status_code == 200, issued.json
    token = issued.json["access_token"]
    assert world.is_active(token)

    response = world.revoke(world.api_key, token_type_hint="service_credential")

    assert response.status_code == 200
    assert not world.is_active(token)
    refused = world.agent_exchange(world.agent_token(), audience=PROJECT)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"


def test_a_wrong_secret_for_a_real_key_id_revokes_nothing(world: World) -> None:
    from sts.credentials import _checksum

    body = world.api_key[: -6 - 32] + "x" * 32
    forged = body + _checksum(body)
    assert world.revoke(forged).status_code == 200
    assert world.agent_exchange(world.agent_token(), audience=PROJECT).status_code == 200


def test_agent_runtime_can_revoke_its_own_token_with_post_auth(world: World) -> None:
    token = world.agent_exchange(world.agent_token(), audience=PROJECT).json["access_token"]
    response = world.revoke(
        token, auth=None, form=[("client_id", "agent-runtime"), ("client_secret", AGENT_SECRET)]
    )
    assert response.status_code == 200
    assert not world.is_active(token)


def test_a_trusted_issuers_token_answers_200_without_fetching_its_keys(world: World) -> None:
    """RFC 7009 §2.2: a token sts cannot revoke (it never issued it) is answered 200;
    its issuer's JWKS is not fetched for it (a 503 would tell the caller the issuer's
    endpoint is down)."""
    world.ci.response = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    response = world.revoke(world.ci_token())
    assert response.status_code == 200, response.json
    assert world.ci.fetches == 0


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_database_down_revocation_and_introspection_refuse_then_recover(
    world: World, empty_database_url: str
) -> None:
    """Fail closed: with the database unreachable, neither endpoint guesses (an
    introspection that cannot read the lineage is no ``active: false``, a revocation that
    cannot be stored is no 200): 503 temporarily_unavailable with Retry-After; once the
    database is back, both work again without a restart."""
    database = make_url(empty_database_url).database
    admin = create_engine(
        str(make_url(empty_database_url).set(database="test")), isolation_level="AUTOCOMMIT"
    )
    tokens = world.chain()
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": database},
            )
        for response in (world.introspect(tokens[1]), world.revoke(tokens[0])):
            assert_error(response, 503, "temporarily_unavailable")
            assert response.headers["Retry-After"]
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert world.is_active(tokens[1])
    assert world.revoke(tokens[0]).status_code == 200
    assert not world.is_active(tokens[1])
