"""RFC 7662 introspection at POST /introspect: fail closed, re-checks lineage, keys and
the policy as it stands now; on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select, update

from sts.app import create_app
from sts.credentials import hash_secret
from sts.db import admin
from sts.db.models import IssuedToken, Revocation, Rule
from sts.grants.client_auth import JWT_BEARER_ASSERTION
from tests.conftest import TEST_ISSUER
from tests.integration.test_token_exchange import assert_error
from tests.integration.world import (
    CI_SECRET,
    CI_SUBJECT,
    DEPLOY,
    PROJECT,
    RULES,
    VAULT,
    World,
    claims_of,
)
from tests.issuer import sign_es256_raw


@contextmanager
def second_instance(world: World) -> Iterator[Flask]:
    """Another replica: its own app, caches and key ring, the same database."""
    services = world.app.extensions["sts"]
    other = create_app(services.settings, clock=world.clock)
    try:
        yield other
    finally:
        other.extensions["sts"].engine.dispose()


def test_active_answer_describes_the_token(world: World) -> None:
    token = world.chain()[1]
    response = world.introspect(token)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti"):
        assert body[name] == claims[name], name
    assert body["client_id"] == "workload"
    assert body["iss"] == TEST_ISSUER


def test_active_answer_carries_the_actor(world: World) -> None:
    issued = world.agent_exchange(world.agent_token("agent-7"), audience=PROJECT)
    body = world.introspect(issued.json["access_token"]).json
    assert body["active"] is True
    assert body["act"] == {"sub": "agent-7", "iss": world.agents.issuer}


def test_only_registered_resource_servers_may_introspect(world: World) -> None:
    token = world.chain()[0]
    for auth in [("ci-runner", CI_SECRET), None, ("resource-server", "wrong-secret-012345678")]:
        response = world.introspect(token, auth=auth)
        assert response.status_code == 401, auth
        # Nothing about the token leaks: only the error.
        assert set(response.json) == {"error", "error_description"}
        assert response.json["error"] == "invalid_client"
        assert response.headers["Cache-Control"] == "no-store"


def test_malformed_requests_are_invalid_request(world: World) -> None:
    missing = world.introspect("")
    repeated = world.introspect("a", form=[("token", "b")])
    wrong_type = world.client.post(
        "/introspect",
        data="token=a",
        content_type="text/plain",
        headers={"Authorization": world.introspect_authorization()},
    )
    for response in (missing, repeated, wrong_type):
        assert response.status_code == 400
        assert response.json["error"] == "invalid_request"
        assert "active" not in response.json


def test_a_replayed_client_assertion_is_refused(world: World) -> None:
    services = world.app.extensions["sts"]
    jwk = world.workload_key.as_dict(private=False)
    jwk.update({"kid": world.workload_key.thumbprint(), "alg": "ES256", "use": "sig"})
    with services.session_factory() as session:
        admin.put_client(
            session,
            client_id="workload",
            auth_method="private_key_jwt",
            jwks={"keys": [jwk]},
            is_resource_server=True,
            now=world.clock(),
        )
        session.commit()
    services.trust.invalidate()
    token = world.chain()[0]
    assertion = world.workload_assertion(aud=TEST_ISSUER + "/introspect")
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]

    first = world.introspect(token, auth=None, form=form)
    replayed = world.introspect(token, auth=None, form=form)

    assert first.json["active"] is True
    assert replayed.status_code == 401
    assert set(replayed.json) == {"error", "error_description"}


def test_inactive_for_tokens_that_are_not_ours_or_not_tokens(world: World) -> None:
    for token in ["garbage", "a.b.c", world.ci_token(), world.api_key]:
        assert world.introspect(token).json == {"active": False}


def test_inactive_when_the_signature_is_bad(world: World) -> None:
    token = world.chain()[0]
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert world.introspect(tampered).json == {"active": False}


def test_inactive_when_signed_by_a_key_not_in_the_jwks(world: World) -> None:
    claims = pyjwt.decode(world.chain()[0], options={"verify_signature": False})
    rogue = ECKey.generate_key("P-256")
    header = {"alg": "ES256", "kid": rogue.thumbprint(), "typ": "at+jwt"}
    forged = jwt.encode(header, claims, rogue, algorithms=["ES256"])
    assert world.introspect(forged).json == {"active": False}


def test_inactive_when_expired(world: World) -> None:
    token = world.chain()[0]
    world.clock.advance(3600)
    assert world.introspect(token).json == {"active": False}


def test_inactive_when_the_signing_key_is_revoked(world: World) -> None:
    token = world.chain()[0]
    kid = pyjwt.get_unverified_header(token)["kid"]
    with world.app.extensions["sts"].session_factory() as session:
        session.add(
            Revocation(kind="key", value=kid, reason="compromised", created_at=world.clock())
        )
        session.commit()
    assert world.introspect(token).json == {"active": False}


def test_inactive_when_an_ancestor_is_revoked(world: World) -> None:
    # As if the parent were revoked while this child was being minted (the revocation's
    # lineage walk could not see the uncommitted child): the ancestor check catches it.
    tokens = world.chain()
    root = claims_of(tokens[0])["jti"]
    with world.app.extensions["sts"].session_factory() as session:
        session.execute(
            update(IssuedToken).where(IssuedToken.jti == root).values(revoked_at=world.clock())
        )
        session.commit()
    assert [world.is_active(token) for token in tokens] == [False, False, False]


def test_inactive_and_not_re_exchangeable_when_the_rule_was_removed(world: World) -> None:
    token = world.chain()[0]
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        admin.delete_rule(session, "payments-prod-deploy")
        session.commit()
    services.trust.invalidate()
    assert world.introspect(token).json == {"active": False}
    refused = world.workload_exchange(token, audience=DEPLOY, scope="deploy:write")
    assert_error(refused, 400, "invalid_request")
    row = world.audit_rows()[-1]
    assert (row["reason"], row["detail"]) == ("subject.withdrawn", "rule: removed")


def test_a_new_rule_never_takes_a_removed_rules_id(world: World) -> None:
    """SQLite gives a new row the highest id plus one: the id of a removed rule that had
    the highest id went to the next new rule, and the removed rule's tokens were judged
    by it. Here the new rule grants the same audience and scope to anyone's CI token."""
    vault = {
        "subject_token": {"issuer": "ci", "subject": CI_SUBJECT},
        "clients": ["ci-runner"],
        "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 60},
    }
    world.put_rule("zz-vault", vault)  # the newest rule: the highest id
    response = world.exchange(world.ci_token(), audience=VAULT, scope="secrets:read")
    assert response.status_code == 200, response.json
    token = response.json["access_token"]
    removed_id = claims_of(token)["sts_rule_id"]

    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        admin.delete_rule(session, "zz-vault")
        session.commit()
    world.put_rule("zz-other-team", {**vault, "subject_token": {"issuer": "ci"}})
    with services.session_factory() as session:
        new_id = session.scalar(select(Rule.id).where(Rule.name == "zz-other-team"))
    assert new_id != removed_id
    assert world.introspect(token).json == {"active": False}


def test_policy_is_re_evaluated_when_the_rule_changes(world: World) -> None:
    token = world.chain()[0]  # scope deploy:write, audience DEPLOY
    original = RULES["payments-prod-deploy"]
    narrowed = {
        **original,
        "allow": {**original["allow"], "scopes": ["deploy:read"], "default_scopes": []},
    }
    world.put_rule("payments-prod-deploy", narrowed)
    assert world.introspect(token).json == {"active": False}

    world.put_rule("payments-prod-deploy", original)  # widened back (a new version)
    assert world.is_active(token)

    moved = {**original, "allow": {**original["allow"], "audiences": [VAULT]}}
    world.put_rule("payments-prod-deploy", moved)
    assert not world.is_active(token)


def test_a_token_its_rule_no_longer_grants_cannot_be_re_exchanged(world: World) -> None:
    """What introspection calls inactive after a rule narrows is refused as a subject
    token too: the workload-narrowing rule (``sts: true``, deploy:write allowed) would
    otherwise hand the withdrawn scope back in a new, active token."""
    token = world.chain()[0]  # payments-prod-deploy@1: scope deploy:write
    original = RULES["payments-prod-deploy"]
    narrowed = {
        **original,
        "allow": {**original["allow"], "scopes": ["deploy:read"], "default_scopes": []},
    }
    world.put_rule("payments-prod-deploy", narrowed)
    assert world.introspect(token).json == {"active": False}

    refused = world.workload_exchange(token, audience=DEPLOY, scope="deploy:write")
    body = assert_error(refused, 400, "invalid_request")
    assert body["error_description"] == "The subject token is no longer allowed by the rules."
    row = world.audit_rows()[-1]
    assert (row["decision"], row["reason"]) == ("deny", "subject.withdrawn")
    assert row["detail"].startswith("rule payments-prod-deploy@")
    assert row["detail"].endswith(": scope: 'deploy:write' not allowed by the rule")

    world.put_rule("payments-prod-deploy", original)  # widened back: granted again
    again = world.workload_exchange(token, audience=DEPLOY, scope="deploy:write")
    assert again.status_code == 200, again.json


def test_revocation_is_visible_to_another_instance_at_once(world: World) -> None:
    tokens = world.chain()
    with second_instance(world) as other:
        replica = other.test_client()
        assert world.is_active(tokens[2])
        assert world.revoke(tokens[0]).status_code == 200
        response = replica.post(
            "/introspect",
            data={"token": tokens[2]},
            headers={"Authorization": world.introspect_authorization()},
        )
        assert response.json == {"active": False}


def test_deploy_audience_is_still_granted_when_unrelated_rules_change(world: World) -> None:
    token = world.chain()[0]
    world.put_rule("workload-narrowing", {**RULES["workload-narrowing"], "clients": ["nobody"]})
    assert world.is_active(token)
    assert DEPLOY in world.introspect(token).json["aud"]


def test_a_trusted_issuers_token_is_inactive_without_fetching_its_keys(world: World) -> None:
    """RFC 7662 §2.2: a token that does not exist on this server is inactive. A trusted
    issuer's token is none of sts's, so its issuer's JWKS is not fetched for it (the
    caller could otherwise make sts fetch, and learn from a 503 that the issuer's
    endpoint is down)."""
    world.ci.response = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    response = world.introspect(world.ci_token())
    assert response.status_code == 200, response.json
    assert response.json == {"active": False}
    assert world.ci.fetches == 0


@pytest.mark.parametrize(
    "header", [{}, {"crit": ["exp"]}, {"typ": "at+jwt"}], ids=["plain", "crit", "typ"]
)
def test_a_forged_client_assertion_tells_nothing_about_which_clients_exist(
    world: World, header: dict[str, Any]
) -> None:
    """An assertion signed with a key of the caller's own is refused alike whether it
    names a private_key_jwt client (workload), a client of another method (ci-runner) or
    no client at all (RFC 6749 §5.2 invalid_client): the answer is no oracle for client
    ids (the audit keeps the precise reason)."""
    forger = ECKey.generate_key("P-256")
    answers = []
    for client_id in ("workload", "ci-runner", "no-such-client"):
        now = world.now()
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": TEST_ISSUER,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        jws_header = {"alg": "ES256", "kid": "forged", **header}
        form = [
            ("client_assertion_type", JWT_BEARER_ASSERTION),
            ("client_assertion", sign_es256_raw(forger, jws_header, claims)),
        ]
        response = world.introspect("any-token", auth=None, form=form)
        assert_error(response, 401, "invalid_client")
        answers.append((response.get_data(), sorted(response.headers.items())))
    assert answers[0] == answers[1] == answers[2]


# ---- a resource server registered with the audiences it serves (RFC 7662 §2.2, §4) ------

LIMITED_SECRET = "limited-server-secret-0123456789abcdef"


def register_resource_server(world: World, client_id: str, introspects: list[str] | None) -> None:
    """A resource server (``client_secret_basic``, ``LIMITED_SECRET``) registered with
    ``introspects`` (None: without it, every token)."""
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        admin.put_client(
            session,
            client_id=client_id,
            auth_method="client_secret_basic",
            secret_hash=hash_secret(LIMITED_SECRET),
            is_resource_server=True,
            introspects=introspects,
            now=world.clock(),
        )
        session.commit()
    services.trust.invalidate()


def deploy_token(world: World) -> str:
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    assert response.status_code == 200, response.json
    return str(response.json["access_token"])  # type: ignore[index]


def project_token(world: World) -> str:
    response = world.agent_exchange(world.agent_token("agent-7"), audience=PROJECT)
    assert response.status_code == 200, response.json
    return str(response.json["access_token"])  # type: ignore[index]


def test_a_resource_server_sees_the_tokens_for_the_audiences_it_introspects(
    world: World,
) -> None:
    register_resource_server(world, "deploy-api", [DEPLOY])
    token = deploy_token(world)
    response = world.introspect(token, auth=("deploy-api", LIMITED_SECRET))

    assert response.status_code == 200
    body = response.json
    claims = claims_of(token)
    assert body["active"] is True
    for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti"):
        assert body[name] == claims[name], name
    assert body["aud"] == DEPLOY
    # The same answer the unrestricted resource server gets.
    assert body == world.introspect(token).json


def test_a_token_for_another_audience_is_inactive_exactly_as_an_unknown_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 7662 §2.2: a token "the protected resource is not allowed to introspect" is
    answered {"active": false}; byte for byte the answer to a token that does not exist,
    so the answer tells the resource server nothing (§4). The log says why."""
    register_resource_server(world, "deploy-api", [DEPLOY])
    token = project_token(world)
    assert world.introspect(token).json["active"] is True  # a live token, for PROJECT
    auth = ("deploy-api", LIMITED_SECRET)

    with caplog.at_level(logging.INFO, logger="sts.endpoints.introspection"):
        refused = world.introspect(token, auth=auth)
    unknown = world.introspect("not-a-token", auth=auth)

    assert refused.json == {"active": False}
    assert refused.status_code == unknown.status_code == 200
    assert refused.get_data() == unknown.get_data()
    assert sorted(refused.headers.items()) == sorted(unknown.headers.items())
    jti = claims_of(token)["jti"]
    assert any(
        f"jti={jti}" in message
        and "introspection.audience_not_served" in message
        and "deploy-api" in message
        for message in (record.getMessage() for record in caplog.records)
    ), caplog.records


def test_a_token_for_several_audiences_is_active_when_one_is_served(world: World) -> None:
    """``aud`` as a list (RFC 7519 §4.1.3): one value in common is enough; none is not."""
    wide = RULES["payments-prod-deploy"]
    world.put_rule(
        "payments-prod-deploy",
        {**wide, "allow": {**wide["allow"], "audiences": [DEPLOY, VAULT], "max_audiences": 2}},
    )
    response = world.exchange(world.ci_token(), form=[("audience", DEPLOY), ("audience", VAULT)])
    assert response.status_code == 200, response.json
    token = response.json["access_token"]  # type: ignore[index]
    assert claims_of(token)["aud"] == [DEPLOY, VAULT]
    register_resource_server(world, "vault", [VAULT, "https://vault.acme.example"])
    register_resource_server(world, "projects", [PROJECT])

    served = world.introspect(token, auth=("vault", LIMITED_SECRET)).json
    assert served["active"] is True
    assert served["aud"] == [DEPLOY, VAULT]
    assert world.introspect(token, auth=("projects", LIMITED_SECRET)).json == {"active": False}


def test_a_resource_server_without_introspects_still_sees_every_token(world: World) -> None:
    """Compatibility: registered without ``introspects``, a resource server sees tokens of
    every audience (``sts rules lint`` flags it: introspection-any-audience), while one
    registered with it, beside it, does not."""
    register_resource_server(world, "any-api", None)
    register_resource_server(world, "deploy-api", [DEPLOY])
    deploy, project = deploy_token(world), project_token(world)

    for token in (deploy, project):
        assert world.introspect(token, auth=("any-api", LIMITED_SECRET)).json["active"] is True
        assert world.introspect(token).json["active"] is True  # the world's resource-server
    limited = ("deploy-api", LIMITED_SECRET)
    assert world.introspect(deploy, auth=limited).json["active"] is True
    assert world.introspect(project, auth=limited).json == {"active": False}
