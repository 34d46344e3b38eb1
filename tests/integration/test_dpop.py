"""DPoP at the token endpoint (RFC 9449), through the app, on SQLite and PostgreSQL.

The proof's own checks (§4.3) are unit-tested in ``tests/unit/test_dpop_proof.py``; here,
what the exchange does with a proof: the token is bound (§6.1) and typed DPoP (§5), the
proof is used once (§11.1) whatever the answer, a bound token is exchanged only with a
proof by its key, a rule can require a proof, introspection describes the binding (§6.2)
and re-checks that requirement, and ``sts gc`` forgets spent proofs."""

from __future__ import annotations

import base64
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from sts import errors
from sts.audit import AuditEntry
from sts.db.models import ClientAssertion, DpopProof, IssuedToken
from sts.grants.client_auth import JWT_BEARER_ASSERTION
from sts.grants.token_exchange import record_refusal
from sts.protocol import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from sts.tokens.dpop import verify_dpop_proof
from tests.conftest import TEST_ISSUER
from tests.integration.test_client_assertion_replay import exchange_with_assertion
from tests.integration.test_offboarding import sts
from tests.integration.world import CI_CLAIMS, CI_SECRET, DEPLOY, RULES, VAULT, World, claims_of
from tests.issuer import sign_es256_raw

TOKEN_URI = TEST_ISSUER + "/token"


def make_proof(world: World, key: ECKey, **claims: Any) -> str:
    """A DPoP proof for POST /token, signed by ``key`` (RFC 9449 §4.2)."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    payload = {"jti": uuid.uuid4().hex, "htm": "POST", "htu": TOKEN_URI, "iat": world.now()}
    payload.update(claims)
    return jwt.encode(header, payload, key, algorithms=["ES256"])


def ci_exchange(world: World, proof: str | None, **params: str) -> Any:
    headers = {"DPoP": proof} if proof is not None else None
    return world.exchange(world.ci_token(), audience=DEPLOY, headers=headers, **params)


def workload_exchange(world: World, subject_token: str, proof: str | None) -> Any:
    """A re-exchange of ``subject_token`` by the workload client, with ``proof`` if any."""
    headers = {"DPoP": proof} if proof is not None else None
    return world.workload_exchange(subject_token, headers, audience=DEPLOY, scope="deploy:write")


def last_audit(world: World) -> dict[str, Any]:
    return world.audit_rows()[-1]


def test_a_proof_binds_the_token_to_its_key(world: World) -> None:
    key = ECKey.generate_key("P-256")
    response = ci_exchange(world, make_proof(world, key))
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "DPoP"  # RFC 9449 §5
    claims = claims_of(response.json["access_token"])
    assert claims["cnf"] == {"jkt": key.thumbprint()}  # §6.1, RFC 7638
    row = last_audit(world)
    assert (row["decision"], row["issued_jti"]) == ("allow", claims["jti"])
    assert row["detail"] == f"dpop_jkt={key.thumbprint()}"
    assert world.count(DpopProof) == 1


def test_without_a_proof_the_token_is_a_bearer_token(world: World) -> None:
    response = ci_exchange(world, None)
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "Bearer"
    assert "cnf" not in claims_of(response.json["access_token"])


def test_a_replayed_proof_is_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    proof = make_proof(world, key)
    assert ci_exchange(world, proof).status_code == 200
    issued = world.count(IssuedToken)

    replay = ci_exchange(world, proof)
    assert replay.status_code == 400
    assert replay.json["error"] == "invalid_dpop_proof"
    assert "access_token" not in replay.json
    assert last_audit(world)["reason"] == "dpop.replay"
    assert last_audit(world)["detail"].endswith(f"; dpop_jkt={key.thumbprint()}")
    assert world.count(IssuedToken) == issued


def test_a_proof_sent_twice_at_once_issues_one_token(world: World) -> None:
    """The proof is spent in the statement that records the token (PostgreSQL: one
    statement; SQLite: behind the write lock): of concurrent requests with one proof,
    exactly one gets a token, and the others are refused as replays."""
    proof = make_proof(world, ECKey.generate_key("P-256"))
    issued = world.count(IssuedToken)
    barrier = threading.Barrier(4)

    basic = base64.b64encode(f"ci-runner:{CI_SECRET}".encode()).decode()
    headers = {"DPoP": proof, "Authorization": f"Basic {basic}"}
    forms = [
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": world.ci_token(),
            "subject_token_type": TOKEN_TYPE_JWT,
            "audience": DEPLOY,
        }
        for _ in range(4)
    ]

    def send(form: dict[str, str]) -> tuple[int, str | None]:
        client = world.app.test_client()  # one each: a test client is not shared
        barrier.wait()
        response = client.post("/token", data=form, headers=headers)
        return response.status_code, (response.json or {}).get("error")

    with ThreadPoolExecutor(4) as pool:
        answers = sorted(pool.map(send, forms), key=lambda answer: answer[0])
    assert answers == [(200, None)] + [(400, "invalid_dpop_proof")] * 3
    assert world.count(IssuedToken) == issued + 1
    assert world.count(DpopProof) == 1


def test_a_proof_is_spent_when_the_exchange_is_blocked(world: World) -> None:
    """Spent whatever the answer: refused by a block found with the token's records, the
    proof cannot be used again once the block is lifted."""
    key = ECKey.generate_key("P-256")
    assert sts(world, "revoke", "--dpop-key", key.thumbprint()).exit_code == 0
    proof = make_proof(world, key)
    assert ci_exchange(world, proof).json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "blocked.dpop_key"
    assert sts(world, "revoke", "--lift", "--dpop-key", key.thumbprint()).exit_code == 0

    again = ci_exchange(world, proof)
    assert again.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.replay"
    assert ci_exchange(world, make_proof(world, key)).status_code == 200


def test_a_replay_is_answered_as_one_whatever_else_is_wrong(world: World) -> None:
    """The proof is spent with the token's records, after the rules; a replay the rules
    would refuse anyway is still recorded and answered as a replay (an alert on
    dpop.replay sees it, and a replayed proof tells nothing of what the rules allow)."""
    key = ECKey.generate_key("P-256")
    proof = make_proof(world, key)
    assert ci_exchange(world, proof).status_code == 200

    replay = world.exchange(world.ci_token(), audience=VAULT, headers={"DPoP": proof})
    assert replay.status_code == 400
    assert replay.json["error"] == "invalid_dpop_proof"
    row = last_audit(world)
    assert row["reason"] == "dpop.replay"
    assert "policy.target" in row["detail"]
    assert row["detail"].endswith(f"dpop_jkt={key.thumbprint()}")


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_a_replayed_client_assertion_is_answered_as_such_with_a_replayed_proof(
    world: World,
) -> None:
    """A client whose assertion is replayed is not authenticated: that is its answer (401),
    whether or not its DPoP proof was used before too."""
    assertion = world.workload_assertion(jti="assertion-and-proof")
    proof = make_proof(world, ECKey.generate_key("P-256"))
    form = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", assertion)]

    def send() -> Any:
        return world.exchange(
            world.ci_token(), audience=VAULT, auth=None, form=form, headers={"DPoP": proof}
        )

    assert send().status_code == 200
    replay = send()
    assert (replay.status_code, replay.json["error"]) == (401, "invalid_client")
    row = last_audit(world)
    assert row["reason"] == "client.replay"
    assert row["detail"].endswith("; the DPoP proof's jti was on record")


def test_a_replay_found_with_a_block_says_both(world: World) -> None:
    """A replayed proof whose key has since been revoked: answered as the replay (the
    proof is what is refused), the block named in the row's detail."""
    key = ECKey.generate_key("P-256")
    proof = make_proof(world, key)
    assert ci_exchange(world, proof).status_code == 200
    assert sts(world, "revoke", "--dpop-key", key.thumbprint()).exit_code == 0

    replay = ci_exchange(world, proof)
    assert replay.json["error"] == "invalid_dpop_proof"
    row = last_audit(world)
    assert row["reason"] == "dpop.replay"
    assert "Also blocked: dpop_key" in row["detail"]


def test_a_proof_is_spent_by_a_refused_exchange_too(world: World) -> None:
    proof = make_proof(world, ECKey.generate_key("P-256"))
    refused = world.exchange(world.ci_token(), audience=VAULT, headers={"DPoP": proof})
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_target"

    again = ci_exchange(world, proof)
    assert again.status_code == 400
    assert again.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.replay"


def test_the_same_jti_under_another_key_is_another_proof(world: World) -> None:
    first = make_proof(world, ECKey.generate_key("P-256"), jti="shared-jti")
    second = make_proof(world, ECKey.generate_key("P-256"), jti="shared-jti")
    assert ci_exchange(world, first).status_code == 200
    assert ci_exchange(world, second).status_code == 200


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"htu": "https://elsewhere.test/token"}, "dpop.htu"),
        ({"htm": "GET"}, "dpop.htm"),
        ({"iat": -3600}, "dpop.stale"),
    ],
    ids=["htu", "htm", "stale"],
)
def test_an_invalid_proof_is_refused_and_not_recorded(
    world: World, claims: dict[str, Any], reason: str
) -> None:
    if claims.get("iat") == -3600:
        claims = {"iat": world.now() - 3600}
    response = ci_exchange(world, make_proof(world, ECKey.generate_key("P-256"), **claims))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_dpop_proof"
    assert response.json["error_description"]
    assert last_audit(world)["reason"] == reason
    assert world.count(DpopProof) == 0  # nothing verified: nothing to spend


def test_two_dpop_headers_are_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    response = world.client.post(
        "/token",
        data=(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
            f"&subject_token={world.ci_token()}"
            "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
            f"&audience={DEPLOY}"
        ),
        content_type="application/x-www-form-urlencoded",
        headers=[
            ("Authorization", "Basic Y2ktcnVubmVyOmNpLXJ1bm5lci1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="),
            ("DPoP", make_proof(world, key)),
            ("DPoP", make_proof(world, key)),
        ],
    )
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.multiple"


def test_a_bound_token_is_exchanged_only_with_a_proof_by_its_key(world: World) -> None:
    key = ECKey.generate_key("P-256")
    bound = ci_exchange(world, make_proof(world, key)).json["access_token"]

    # Leaked without its key: re-exchanging it would strip the binding.
    bare = workload_exchange(world, bound, None)
    assert bare.status_code == 400
    assert bare.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.subject_bound"

    other = workload_exchange(world, bound, make_proof(world, ECKey.generate_key("P-256")))
    assert other.status_code == 400
    assert other.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.subject_key"

    holder = workload_exchange(world, bound, make_proof(world, key))
    assert holder.status_code == 200, holder.json
    assert holder.json["token_type"] == "DPoP"
    assert claims_of(holder.json["access_token"])["cnf"] == {"jkt": key.thumbprint()}


def test_an_upstream_token_bound_to_a_key_needs_its_proof(world: World) -> None:
    key = ECKey.generate_key("P-256")
    upstream = world.ci_token(cnf={"jkt": key.thumbprint()})

    refused = world.exchange(upstream, audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.subject_bound"

    allowed = world.exchange(upstream, audience=DEPLOY, headers={"DPoP": make_proof(world, key)})
    assert allowed.status_code == 200, allowed.json
    assert claims_of(allowed.json["access_token"])["cnf"] == {"jkt": key.thumbprint()}


def test_a_binding_sts_cannot_check_refuses_the_token(world: World) -> None:
    """RFC 8705 mTLS binding (``x5t#S256``): sts sees no client certificate: fail closed."""
    upstream = world.ci_token(cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"})
    response = world.exchange(upstream, audience=DEPLOY)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert last_audit(world)["reason"] == "subject.cnf_unsupported"


def test_a_null_binding_refuses_the_token(world: World) -> None:
    """RFC 7800 §3.1: ``cnf`` is an object. A ``null`` one was read as no binding, so a
    token its issuer meant to bind was exchanged without a proof."""
    now = world.now()
    claims = {
        "iss": world.ci.issuer,
        "sub": "repo:acme/payments:environment:production",
        "aud": "https://sts.test",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **CI_CLAIMS,
        "cnf": None,
    }
    upstream = world.ci.mint_raw({"alg": "ES256", "kid": world.ci.kid, "typ": "JWT"}, claims)
    key = ECKey.generate_key("P-256")
    for headers in (None, {"DPoP": make_proof(world, key)}):
        response = world.exchange(upstream, audience=DEPLOY, headers=headers)
        assert response.status_code == 400
        assert response.json["error"] == "invalid_request"
        assert last_audit(world)["reason"] == "subject.cnf_unsupported"


def test_a_refusal_with_a_proof_keeps_its_detail_storable(world: World) -> None:
    """The refusal's detail is escaped before the insert with a proof's key appended too
    (it was escaped only without one: a NUL lost the row on PostgreSQL)."""
    key = ECKey.generate_key("P-256")
    now = datetime.fromtimestamp(world.now(), UTC)
    proof = verify_dpop_proof(
        make_proof(world, key), method="POST", uri=TOKEN_URI, now=now, max_age=60, leeway=0
    )
    assert proof is not None
    entry = AuditEntry(at=now, client_id="ci-deployer")
    error = errors.InvalidRequest("Refused.", reason="test.detail", detail="a\x00b\ud800c")
    record_refusal(world.app.extensions["sts"], entry, error, None, proof)
    row = last_audit(world)
    assert row["reason"] == "test.detail"
    assert row["detail"] == f"a\\x00b\\ud800c; dpop_jkt={key.thumbprint()}"


def require_dpop(world: World, name: str = "payments-prod-deploy") -> None:
    definition = dict(RULES[name])
    definition["allow"] = {**definition["allow"], "sender_constraint": "dpop"}
    world.put_rule(name, definition)


def test_a_rule_can_require_a_proof(world: World) -> None:
    require_dpop(world)
    refused = ci_exchange(world, None)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "policy.dpop_required"

    allowed = ci_exchange(world, make_proof(world, ECKey.generate_key("P-256")))
    assert allowed.status_code == 200, allowed.json
    assert allowed.json["token_type"] == "DPoP"


def test_introspection_describes_the_binding(world: World) -> None:
    key = ECKey.generate_key("P-256")
    bound = ci_exchange(world, make_proof(world, key)).json["access_token"]
    answer = world.introspect(bound).json
    assert answer["active"] is True
    assert answer["cnf"] == {"jkt": key.thumbprint()}  # RFC 9449 §6.2
    assert answer["token_type"] == "DPoP"

    bearer = world.introspect(ci_exchange(world, None).json["access_token"]).json
    assert bearer["active"] is True
    assert (bearer["token_type"], "cnf" in bearer) == ("Bearer", False)


def test_a_rule_that_comes_to_require_a_proof_ends_its_bearer_tokens(world: World) -> None:
    """Post-issuance check: introspection re-applies the rule as it stands now."""
    bearer = ci_exchange(world, None).json["access_token"]
    bound = ci_exchange(world, make_proof(world, ECKey.generate_key("P-256"))).json["access_token"]
    require_dpop(world)
    assert world.is_active(bearer) is False
    assert world.is_active(bound) is True


def test_metadata_names_the_proof_algorithms(world: World) -> None:
    metadata = world.client.get("/.well-known/oauth-authorization-server").json
    algorithms = metadata["dpop_signing_alg_values_supported"]  # RFC 9449 §5.1
    assert "ES256" in algorithms
    assert not {"none", "HS256"} & set(algorithms)


def test_gc_forgets_spent_proofs_and_assertions(world: World) -> None:
    """A used proof or client assertion is kept while its own expiry still lets it
    through (plus the clock leeway): until then its record is what refuses a replay."""
    settings = world.app.extensions["sts"].settings
    assert ci_exchange(world, make_proof(world, ECKey.generate_key("P-256"))).status_code == 200
    sts_token = ci_exchange(world, None).json["access_token"]
    assert workload_exchange(world, sts_token, None).status_code == 200
    assert (world.count(DpopProof), world.count(ClientAssertion)) == (1, 1)

    kept = sts(world, "gc")
    assert kept.exit_code == 0, kept.output
    assert "0 used assertion or DPoP proof id(s)" in kept.output
    assert (world.count(DpopProof), world.count(ClientAssertion)) == (1, 1)

    # The proof's record: max age + 2 x leeway after its use; the assertion's: its exp
    # (60 s); each kept a leeway and a second more (joserfc's whole-second clock).
    world.clock.advance(settings.dpop_proof_max_age + 3 * settings.clock_leeway + 2)
    collected = sts(world, "gc")
    assert "2 used assertion or DPoP proof id(s)" in collected.output
    assert (world.count(DpopProof), world.count(ClientAssertion)) == (0, 0)


def test_a_leaked_dpop_key_is_revoked_with_every_token_bound_to_it(world: World) -> None:
    """``sts revoke --dpop-key JKT``: the private key behind a DPoP binding has leaked.
    Every token bound to it (and what was exchanged from them) is revoked, and its
    proofs are refused until the block is lifted; other keys and bearer tokens are not
    touched."""
    leaked, other = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    bound = ci_exchange(world, make_proof(world, leaked)).json["access_token"]
    derived = workload_exchange(world, bound, make_proof(world, leaked)).json["access_token"]
    kept = ci_exchange(world, make_proof(world, other)).json["access_token"]
    bearer = ci_exchange(world, None).json["access_token"]
    with world.app.extensions["sts"].session_factory() as session:
        bound_row = session.get(IssuedToken, claims_of(bound)["jti"])
        assert bound_row is not None and bound_row.dpop_jkt == leaked.thumbprint()

    revoked = sts(world, "revoke", "--dpop-key", leaked.thumbprint(), "--reason", "key leaked")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked 2 token(s)" in revoked.output
    assert (world.is_active(bound), world.is_active(derived)) == (False, False)
    assert (world.is_active(kept), world.is_active(bearer)) == (True, True)

    refused = ci_exchange(world, make_proof(world, leaked))
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "blocked.dpop_key"
    assert ci_exchange(world, make_proof(world, other)).status_code == 200

    lifted = sts(world, "revoke", "--lift", "--dpop-key", leaked.thumbprint())
    assert "lifted 1 block(s)" in lifted.output
    assert ci_exchange(world, make_proof(world, leaked)).status_code == 200


def raw_proof(key: ECKey, payload: str) -> str:
    """A proof whose payload is exactly ``payload`` (JSON that joserfc's encoder would not
    write), signed by ``key``, its jwk in the header."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return sign_es256_raw(key, header, payload)


@pytest.mark.parametrize(
    ("jti", "reason"),
    [
        pytest.param('"a\\u0000b"', "dpop.jti", id="nul"),
        pytest.param('"\\ud800"', "dpop.jti", id="surrogate"),
    ],
)
def test_a_proof_jti_the_record_cannot_hold_is_refused_and_recorded(
    world: World, jti: str, reason: str
) -> None:
    """Stored as is, a NUL failed the insert on PostgreSQL (a 503, and no record of the
    refusal) and a lone surrogate raised past the error handling (a 500)."""
    key = ECKey.generate_key("P-256")
    payload = (
        '{"jti": ' + jti + f', "htm": "POST", "htu": "{TOKEN_URI}", "iat": {world.now()}' + "}"
    )
    response = ci_exchange(world, raw_proof(key, payload))
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == reason


def test_a_proof_nested_past_the_recursion_limit_is_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    response = ci_exchange(world, raw_proof(key, "[" * 5000 + "]" * 5000))
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_dpop_proof"
    assert last_audit(world)["reason"] == "dpop.malformed"


def test_revoke_names_a_dpop_key_by_its_thumbprint_only(world: World) -> None:
    """A mistyped or padded thumbprint would block nothing and say nothing."""
    for value in ("not-a-thumbprint", ECKey.generate_key("P-256").thumbprint() + "="):
        result = sts(world, "revoke", "--dpop-key", value)
        assert result.exit_code == 2, result.output
        assert "RFC 7638" in result.output


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_gc_keeps_an_assertion_with_a_fractional_exp_while_it_is_accepted(
    world: World,
) -> None:
    """joserfc compares ``exp`` with whole seconds: an assertion with exp = t + 60.5 is
    still accepted at t + 60.7 + leeway, so its record must still be there."""
    settings = world.app.extensions["sts"].settings
    assertion = world.workload_assertion(jti="fractional-exp", exp=world.now() + 60.5)
    assert exchange_with_assertion(world, assertion, VAULT).status_code == 200
    world.clock.advance(60.7 + settings.clock_leeway)
    assert "0 used assertion" in sts(world, "gc").output
    replay = exchange_with_assertion(world, assertion, VAULT)
    assert replay.status_code == 401, replay.json
    assert last_audit(world)["reason"] == "client.replay"
