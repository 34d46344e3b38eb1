"""The token endpoint over HTTP with a real database: RFC 8693 §2 request/response rules,
client authentication (RFC 6749 §2.3, RFC 7523), records, and failure modes."""

from __future__ import annotations

import json
import logging
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from sts.db.models import AuditRecord, IssuedToken
from sts.protocol import TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT
from tests.conftest import TEST_ISSUER
from tests.integration.world import CI_SECRET, DEPLOY, VAULT, World, claims_of


def assert_error(response, status: int, error: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert body["error"] == error
    assert body["error_description"]
    assert "access_token" not in body
    assert response.headers["Cache-Control"] == "no-store"
    return body  # type: ignore[no-any-return]


def test_response_follows_rfc8693_2_2_1(world: World) -> None:
    response = world.exchange(world.ci_token(), audience=DEPLOY, scope="deploy:write")
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "deploy:write"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_no_scope_member_for_a_token_without_scopes(world: World) -> None:
    world.put_rule(
        "payments-prod-deploy",
        {
            "subject_token": {
                "issuer": "ci",
                "subject": "repo:acme/payments:environment:production",
            },
            "clients": ["ci-runner"],
            "allow": {"audiences": [DEPLOY], "scopes": ["deploy:write"], "max_ttl": 300},
        },
    )
    body = world.exchange(world.ci_token(), audience=DEPLOY).json
    assert "scope" not in body  # RFC 6749 §3.3: a scope has at least one scope-token
    assert "scope" not in claims_of(body["access_token"])


def test_requested_token_type_jwt_is_reported(world: World) -> None:
    response = world.exchange(
        world.ci_token(), audience=DEPLOY, requested_token_type=TOKEN_TYPE_JWT
    )
    assert response.json["issued_token_type"] == TOKEN_TYPE_JWT


def test_minted_token_verifies_with_an_independent_library(world: World) -> None:
    body = world.exchange(world.ci_token(), audience=DEPLOY).json
    token = body["access_token"]
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"  # RFC 9068 §2.1
    jwks = pyjwt.PyJWKSet.from_dict(world.client.get("/jwks.json").json)
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = pyjwt.decode(
        token,
        key=key,
        algorithms=["ES256"],
        audience=DEPLOY,
        issuer=TEST_ISSUER,
        options={"require": ["exp", "iat", "nbf", "jti", "sub", "aud", "iss"]},
        leeway=10**9,  # the test clock is fixed in the past; exp is checked below
    )
    assert claims["exp"] - claims["iat"] == 300
    assert claims["iat"] == world.now()
    assert claims["sub"] == "repo:acme/payments:environment:production"
    assert claims["client_id"] == "ci-runner"
    assert claims["scope"] == "deploy:write"
    assert claims["repository"] == "acme/payments" and claims["sha"] == "0f1e2d3c"
    assert "ref" not in claims and "actor" not in claims  # only what the rule copies
    assert claims["sts_rule_id"] and claims["sts_rule_version"]
    with pytest.raises(pyjwt.InvalidAudienceError):
        pyjwt.decode(token, key=key, algorithms=["ES256"], audience=VAULT, leeway=10**9)


def test_audit_and_lineage_rows_are_committed(world: World) -> None:
    subject_token = world.ci_token()
    body = world.exchange(subject_token, audience=DEPLOY).json
    jti = claims_of(body["access_token"])["jti"]
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        lineage = session.get(IssuedToken, jti)
        audit = session.scalars(select(AuditRecord).where(AuditRecord.issued_jti == jti)).one()
    assert lineage is not None
    assert lineage.subject_issuer == world.ci.issuer
    assert lineage.subject_token_id == claims_of(subject_token)["jti"]
    assert lineage.audience == [DEPLOY] and lineage.scope == "deploy:write"
    assert audit.decision == "allow" and audit.client_id == "ci-runner"
    assert audit.rule_id == claims_of(body["access_token"])["sts_rule_id"]
    for row in world.audit_rows():
        assert subject_token not in json.dumps(row, default=str)  # never the token itself


def test_one_transaction_per_exchange(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sts.db.exchange_store"):
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
        first = [r.getMessage().split()[0].upper() for r in caplog.records]
        caplog.clear()
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
        second = [r.getMessage().split()[0].upper() for r in caplog.records]
    # One transaction each: for the first exchange only, the first status list and a block of its
    # indexes (the second takes its index from that block); then the block check on the
    # identities involved and lineage + audit; one COMMIT. On PostgreSQL, first, the
    # governance lock held shared, and the check and both inserts are one statement.
    postgresql = world.app.extensions["sts"].engine.dialect.name == "postgresql"
    key_lock = ["SELECT"] if postgresql else []
    record = ["WITH"] if postgresql else ["SELECT", "INSERT", "INSERT"]
    assert first == ["BEGIN", *key_lock, *("UPDATE", "INSERT", "UPDATE"), *record, "COMMIT"]
    assert second == ["BEGIN", *key_lock, *record, "COMMIT"]


# ---- client authentication --------------------------------------------------------


def test_wrong_secret_is_invalid_client_401(world: World) -> None:
    response = world.exchange(world.ci_token(), audience=DEPLOY, auth=("ci-runner", "wrong-secret"))
    assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_unknown_client_is_invalid_client_401(world: World) -> None:
    response = world.exchange(world.ci_token(), audience=DEPLOY, auth=("nobody", CI_SECRET))
    assert_error(response, 401, "invalid_client")


def test_registered_method_is_enforced(world: World) -> None:
    # ci-runner is registered for client_secret_basic: the same secret in the body fails.
    response = world.exchange(
        world.ci_token(),
        audience=DEPLOY,
        auth=None,
        form=[("client_id", "ci-runner"), ("client_secret", CI_SECRET)],
    )
    assert_error(response, 401, "invalid_client")


def test_two_authentication_methods_are_refused(world: World) -> None:
    response = world.exchange(
        world.ci_token(),
        audience=DEPLOY,
        form=[("client_id", "ci-runner"), ("client_secret", CI_SECRET)],
    )
    assert_error(response, 400, "invalid_request")


def test_no_client_when_the_rule_requires_one(world: World) -> None:
    response = world.exchange(world.ci_token(), audience=DEPLOY, auth=None)
    assert_error(response, 400, "invalid_request")


def test_anonymous_exchange_when_the_rule_allows_it(world: World) -> None:
    world.put_rule(
        "anonymous-ci",
        {
            "subject_token": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
            "allow_unauthenticated": True,
            "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 60},
        },
    )
    response = world.exchange(world.ci_token(), audience=VAULT, scope="secrets:read", auth=None)
    assert response.status_code == 200
    assert "client_id" not in claims_of(response.json["access_token"])


def test_an_explicit_deny_covers_an_exchange_without_client_authentication(world: World) -> None:
    """The world's ``no-pull-request-deploys`` names no clients: it covers anonymous
    requests too, which an allow rule with ``allow_unauthenticated`` would grant."""
    world.put_rule(
        "anonymous-ci",
        {
            "subject_token": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
            "allow_unauthenticated": True,
            "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 60},
        },
    )
    pull_request = world.ci_token(event_name="pull_request")
    response = world.exchange(pull_request, audience=VAULT, scope="secrets:read", auth=None)
    assert_error(response, 400, "invalid_request")
    row = world.audit_rows()[-1]
    assert (row["decision"], row["reason"]) == ("deny", "policy.denied_by_rule")


def test_private_key_jwt_and_replay(world: World) -> None:
    from sts.grants.client_auth import JWT_BEARER_ASSERTION

    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    assertion = world.workload_assertion(jti="assertion-1")
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]
    first = world.exchange(
        parent, "urn:ietf:params:oauth:token-type:access_token", auth=None, form=form
    )
    assert first.status_code == 200, first.json
    assert claims_of(first.json["access_token"])["client_id"] == "workload"
    replay = world.exchange(
        parent, "urn:ietf:params:oauth:token-type:access_token", auth=None, form=form
    )
    assert_error(replay, 401, "invalid_client")
    assert world.audit_rows()[-1]["reason"] == "client.replay"


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "https://elsewhere"}, {"iss": "someone-else"}, {"exp": 1}],
    ids=["wrong-aud", "iss-not-client", "expired"],
)
def test_bad_client_assertions(world: World, overrides: dict[str, Any]) -> None:
    from sts.grants.client_auth import JWT_BEARER_ASSERTION

    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    form = [
        ("client_id", "workload"),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", world.workload_assertion(**overrides)),
    ]
    response = world.exchange(
        parent, "urn:ietf:params:oauth:token-type:access_token", auth=None, form=form
    )
    assert_error(response, 401, "invalid_client")


def _exchange_with_assertion_header(world: World, header: dict[str, Any]) -> Any:
    from sts.grants.client_auth import JWT_BEARER_ASSERTION

    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    form = [
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", world.workload_assertion(header=header)),
    ]
    return world.exchange(
        parent, "urn:ietf:params:oauth:token-type:access_token", auth=None, form=form
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"crit": 5}, "client.assertion_crit"),
        ({"crit": None}, "client.assertion_crit"),
        ({"crit": [1]}, "client.assertion_crit"),
        ({"crit": ["kid"]}, "client.assertion_crit"),
        ({"crit": ["b64"], "b64": True}, "client.assertion_crit"),
        ({"typ": "at+jwt"}, "client.assertion_typ"),
        ({"typ": "application/AT+JWT"}, "client.assertion_typ"),
        ({"typ": "dpop+jwt"}, "client.assertion_typ"),
        ({"typ": "statuslist+jwt"}, "client.assertion_typ"),
        ({"typ": 5}, "client.assertion_typ"),
    ],
    ids=[
        "crit-number",
        "crit-null",
        "crit-not-strings",
        "crit-standard-header",
        "crit-b64",
        "typ-access-token",
        "typ-access-token-media-type",
        "typ-dpop-proof",
        "typ-status-list",
        "typ-not-text",
    ],
)
def test_a_client_assertion_header_sts_does_not_accept_is_invalid_client(
    world: World, header: dict[str, Any], reason: str
) -> None:
    """RFC 7515 §4.1.11: sts understands no crit extension, so any crit is refused (one
    that is not a list of strings was a 500); RFC 8725 §3.11: a JWT typed as another kind
    sts knows is not a client assertion."""
    response = _exchange_with_assertion_header(world, header)
    assert_error(response, 401, "invalid_client")
    assert world.audit_rows()[-1]["reason"] == reason


@pytest.mark.parametrize(
    "header",
    [{}, {"typ": "JWT"}, {"typ": "client-authentication+jwt"}],
    ids=["no-typ", "typ-jwt", "typ-client-authentication"],
)
def test_a_client_assertion_without_a_reserved_typ_is_accepted(
    world: World, header: dict[str, Any]
) -> None:
    response = _exchange_with_assertion_header(world, header)
    assert response.status_code == 200, response.json
    assert claims_of(response.json["access_token"])["client_id"] == "workload"


# ---- targets and scopes -----------------------------------------------------------


def test_audience_not_allowed_is_invalid_target(world: World) -> None:
    body = assert_error(world.exchange(world.ci_token(), audience=VAULT), 400, "invalid_target")
    assert "deploy.acme" not in body["error_description"]  # the rules are not revealed


def test_resource_not_allowed_is_invalid_target(world: World) -> None:
    assert_error(
        world.exchange(world.ci_token(), resource="https://other.example/api"),
        400,
        "invalid_target",
    )


def test_scope_not_allowed_is_invalid_scope(world: World) -> None:
    assert_error(
        world.exchange(world.ci_token(), audience=DEPLOY, scope="deploy:admin"),
        400,
        "invalid_scope",
    )


def test_duplicated_single_valued_parameter(world: World) -> None:
    response = world.exchange(
        world.ci_token(), form=[("scope", "deploy:write"), ("scope", "deploy:read")]
    )
    assert_error(response, 400, "invalid_request")


def test_audience_may_repeat_up_to_the_rule(world: World) -> None:
    response = world.exchange(world.ci_token(), form=[("audience", DEPLOY), ("audience", VAULT)])
    assert_error(response, 400, "invalid_target")


def test_every_refusal_is_audited_with_its_reason(world: World) -> None:
    world.exchange(world.ci_token(), audience=VAULT)
    row = world.audit_rows()[-1]
    assert row["decision"] == "deny"
    assert row["reason"].startswith("policy.")
    assert row["client_id"] == "ci-runner"
    assert row["subject"] == "repo:acme/payments:environment:production"
    assert "payments-prod-deploy" in row["detail"]  # the full reason stays private


# ---- dependencies down -------------------------------------------------------------


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_database_down_refuses_then_recovers(world: World, empty_database_url: str) -> None:
    database = make_url(empty_database_url).database
    admin = create_engine(
        str(make_url(empty_database_url).set(database="test")), isolation_level="AUTOCOMMIT"
    )
    token = world.ci_token()
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": database},
            )
        world.app.extensions["sts"].trust.invalidate()
        down = world.exchange(token, audience=DEPLOY)
        assert_error(down, 503, "temporarily_unavailable")
        assert world.client.get("/readyz").status_code == 503
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200


def test_id_token_type_is_accepted_for_external_issuers(world: World) -> None:
    response = world.exchange(world.ci_token(), TOKEN_TYPE_ID_TOKEN, audience=DEPLOY)
    assert response.status_code == 200


def test_unavailable_signing_key_refuses_with_503_and_no_token(world: World) -> None:
    from sts.db.models import SigningKey

    services = world.app.extensions["sts"]
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    # The key file disappears (a broken volume, say) while the process runs: the loaded
    # copy was dropped on refresh because the key is no longer published.
    with services.session_factory() as session:
        session.execute(update(SigningKey).values(state="removed"))
        session.commit()
    world.clock.advance(services.settings.key_refresh_interval + 1)
    for path in services.settings.keys_dir.glob("*.pem"):
        path.unlink()
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    assert_error(response, 503, "temporarily_unavailable")
    assert world.audit_rows()[-1]["reason"] == "keys.no_active_key"
    assert world.client.get("/readyz").status_code == 503


def test_exchange_while_a_rotation_step_is_due(world: World) -> None:
    """A rotation step due at the moment of an exchange runs (under its own write lock,
    outside the exchange's transaction) and the exchange still succeeds, without hanging."""
    import threading

    services = world.app.extensions["sts"]
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    from sts.db import queries

    def published() -> int:
        with services.session_factory() as session:
            return len(queries.published_signing_keys(session))

    keys_before = published()
    world.clock.advance(services.settings.key_active_period)  # a successor is now due
    results: list[int] = []
    worker = threading.Thread(
        target=lambda: results.append(world.exchange(world.ci_token(), audience=DEPLOY).status_code)
    )
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the exchange deadlocked"
    assert results == [200]
    assert published() > keys_before  # the exchange's key-ring refresh ran the rotation step


# An exchange whose presented tokens never touch the key ring: an API-key subject, no
# actor. A JWT subject (above) refreshes the ring while it is verified, before the
# exchange's transaction opens, so it cannot tell where ``issue`` reads its signing key;
# here that read is the ring's first refresh after the clock moved, so a due rotation
# step runs right there and must not run inside the exchange's write transaction.
# Inside it, on SQLite, the step's own write lock is refused (nested on one thread); the
# ring logs "key ring refresh failed" and keeps its stale snapshot, so the exchange still
# answers 200 with the old key: the symptom is a step that did not run, not an error.
API_KEY_ALONE = {
    "subject_token": {"credential": "agent-key", "subject": "team-alpha-automation"},
    "clients": ["agent-runtime"],
    "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 300},
}


def published_kids(world: World) -> set[str]:
    from sts.db import queries

    with world.app.extensions["sts"].session_factory() as session:
        return {row.kid for row in queries.published_signing_keys(session)}


def api_key_exchange_in_a_thread(world: World) -> Any:
    """The API-key exchange (no actor) in a worker thread: a hang fails, not blocks."""
    import threading

    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(world.agent_exchange(audience=VAULT))
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the exchange hung (nested write transaction?)"
    (response,) = outcome
    assert not isinstance(response, BaseException), repr(response)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def verify_with_published_jwks(world: World, token: str) -> tuple[str, dict[str, Any]]:
    header = pyjwt.get_unverified_header(token)
    jwks = pyjwt.PyJWKSet.from_dict(world.client.get("/jwks.json").json)
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = pyjwt.decode(
        token, key=key, algorithms=["ES256"], audience=VAULT, issuer=TEST_ISSUER, leeway=10**9
    )
    return header["kid"], claims


def test_api_key_exchange_while_a_rotation_step_is_due(world: World) -> None:
    """The signing-key read is the ring's only refresh in this exchange: the due step
    (publish the successor) runs there, outside the exchange's write transaction."""
    services = world.app.extensions["sts"]
    world.put_rule("agent-key-alone", API_KEY_ALONE)
    assert world.agent_exchange(audience=VAULT).status_code == 200
    active = services.keyring.signing_key().kid
    before = published_kids(world)
    assert before == {active}
    # Far past key_refresh_interval too: the ring's snapshot is stale, so the signing-key
    # read refreshes it (and plans the rotation) at the moment of the exchange.
    world.clock.advance(services.settings.key_active_period)
    assert services.settings.key_active_period > services.settings.key_refresh_interval

    response = api_key_exchange_in_a_thread(world)

    after = published_kids(world)
    assert len(after) == len(before) + 1 and before < after  # the step ran: successor published
    kid, claims = verify_with_published_jwks(world, response.json["access_token"])
    assert kid == active  # the successor is only pending: the active key still signs
    assert claims["sub"] == "team-alpha-automation" and "act" not in claims
    assert claims["iat"] == world.now()


def test_api_key_exchange_signs_with_the_key_a_due_activation_just_made_active(
    world: World,
) -> None:
    """The token is signed by the key the rotation step activated during this very
    exchange, not by a snapshot read before it."""
    services = world.app.extensions["sts"]
    settings = services.settings
    world.put_rule("agent-key-alone", API_KEY_ALONE)
    old = services.keyring.signing_key().kid
    world.clock.advance(settings.key_active_period)
    services.keyring.load()  # publishes the successor as pending (not via an exchange)
    (successor,) = published_kids(world) - {old}
    # The successor may sign once published for the lead time plus one refresh interval;
    # that also makes the ring's snapshot stale again.
    world.clock.advance(settings.key_publish_lead_time + settings.key_refresh_interval)

    response = api_key_exchange_in_a_thread(world)

    assert services.keyring.signing_key().kid == successor  # the step ran: activated
    assert published_kids(world) == {old, successor}  # old retired, still published
    kid, _ = verify_with_published_jwks(world, response.json["access_token"])
    assert kid == successor


def test_a_failed_audit_write_issues_no_token_and_leaves_no_lineage(world: World) -> None:
    """The audit INSERT is the exchange's last statement (on PostgreSQL it is only sent with
    the COMMIT, pipelined): when it fails, the exchange is refused with 503, the lineage row
    of the same transaction is not committed, and the next exchange succeeds."""
    services = world.app.extensions["sts"]

    def lineage_count() -> int:
        with services.session_factory() as session:
            return int(session.scalar(select(func.count()).select_from(IssuedToken)) or 0)

    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    before = lineage_count()
    with services.engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        response = world.exchange(world.ci_token(), audience=DEPLOY)
        assert_error(response, 503, "temporarily_unavailable")
        assert "access_token" not in response.json
        assert lineage_count() == before
    finally:
        with services.engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert lineage_count() == before + 1


def test_a_key_compromised_after_the_ring_was_read_signs_nothing(world: World) -> None:
    """Another process marks the signing key compromised; this process's key ring still
    holds it (its refresh interval has not passed). The exchange finds the key's block in
    its transaction: 503, no lineage row, and the ring re-reads the keys, so the retry is
    signed by the new key."""
    from sts.keys.keystore import make_keystore
    from sts.keys.lifecycle import compromise

    services = world.app.extensions["sts"]
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    leaked = services.keyring.signing_key().kid
    result = compromise(
        services.session_factory,
        make_keystore(services.settings),
        services.settings.signing_alg,
        leaked,
        world.clock,
    )
    assert services.keyring.signing_key().kid == leaked  # not refreshed yet

    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    assert_error(refused, 503, "temporarily_unavailable")
    assert world.audit_rows()[-1]["reason"] == "keys.compromised"
    with services.session_factory() as session:
        signed_by_leaked = session.scalars(select(IssuedToken).where(IssuedToken.kid == leaked))
        assert all(row.revoked_at is not None for row in signed_by_leaked)

    retried = world.exchange(world.ci_token(), audience=DEPLOY)
    assert retried.status_code == 200
    header = pyjwt.get_unverified_header(retried.json["access_token"])
    assert header["kid"] == result.new_kid != leaked


# ---- RFC 6749 §3.2 parameters; values out of range; the invalid_client challenge ------


def test_parameters_sent_without_a_value_are_treated_as_omitted(world: World) -> None:
    """RFC 6749 §3.2: "Parameters sent without a value MUST be treated as if they were
    omitted from the request"."""
    plain = world.exchange(world.ci_token(), audience=DEPLOY)
    blank = world.exchange(
        world.ci_token(),
        form=[("audience", DEPLOY), ("scope", ""), ("resource", ""), ("audience", "")],
    )
    assert plain.status_code == blank.status_code == 200, blank.json
    claims = claims_of(blank.json["access_token"])
    assert claims["scope"] == claims_of(plain.json["access_token"])["scope"]  # the default
    assert claims["aud"] in (DEPLOY, [DEPLOY])


def test_a_blank_grant_type_is_a_missing_one(world: World) -> None:
    response = world.client.post(
        "/token",
        data="grant_type=&subject_token=x",
        content_type="application/x-www-form-urlencoded",
    )
    assert_error(response, 400, "invalid_request")
    assert response.json["error_description"] == "Missing grant_type."


def test_unrecognized_parameters_are_ignored_even_when_repeated(world: World) -> None:
    """RFC 6749 §3.2: the server "MUST ignore unrecognized request parameters"."""
    response = world.exchange(
        world.ci_token(), audience=DEPLOY, form=[("foo", "1"), ("foo", "2"), ("bar", "")]
    )
    assert response.status_code == 200, response.json


def test_a_subject_token_expiring_past_any_date_is_invalid_request(world: World) -> None:
    """A signature can carry exp = 1e20; joserfc lets a number through, sts refuses it
    (RFC 8693 §2.2.2: an invalid subject_token is invalid_request), never a 500."""
    rows = len(world.audit_rows())
    response = world.exchange(world.ci_token(exp=10**20), audience=DEPLOY)
    assert_error(response, 400, "invalid_request")
    assert response.json["error_description"] == "The subject token has an invalid claim."
    audit = world.audit_rows()
    assert len(audit) == rows + 1 and audit[-1]["reason"] == "subject.invalid_claim"


def test_a_client_assertion_expiring_past_any_date_is_invalid_client(world: World) -> None:
    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    response = world.exchange(
        parent,
        "urn:ietf:params:oauth:token-type:access_token",
        auth=None,
        form=[
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", world.workload_assertion(exp=10**20)),
        ],
    )
    assert_error(response, 401, "invalid_client")


def test_a_client_failing_without_the_header_is_told_basic_is_supported(world: World) -> None:
    """RFC 6749 §5.2: a 401 for invalid_client names a scheme the endpoint supports (sts
    accepts Basic, never Bearer, at the token endpoint)."""
    response = world.exchange(
        world.ci_token(),
        audience=DEPLOY,
        auth=None,
        form=[("client_id", "ci-runner"), ("client_secret", "wrong")],
    )
    assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="sts", error="invalid_client"'
