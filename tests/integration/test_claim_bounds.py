"""A ``sub`` or ``jti`` longer than the lineage and audit rows hold, or holding what
they cannot hold at all (a NUL, a lone surrogate), is refused and recorded, on both
databases (on PostgreSQL the row's insert used to fail: a 503, and a refusal that could
not be written). At the bound, the exchange goes through. Untrusted JSON nested past the
recursion limit is a refusal too, not a 500."""

from __future__ import annotations

import base64
import json

import pytest

from sts.grants.client_auth import JWT_BEARER_ASSERTION
from tests.integration.test_client_assertion_replay import exchange_with_assertion
from tests.integration.world import DEPLOY, PROJECT, RULES, VAULT, World


def last_reason(world: World) -> str:
    return str(world.audit_rows()[-1]["reason"])


@pytest.mark.parametrize(
    ("claim", "bound", "column"), [("jti", 255, "subject_token_id"), ("sub", 1024, "subject")]
)
def test_a_subject_token_claim_past_its_bound_is_refused_and_recorded(
    world: World, claim: str, bound: int, column: str
) -> None:
    refused = world.exchange(world.ci_token(**{claim: "x" * (bound + 1)}), audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"
    assert f"{claim} longer than {bound}" in refused.json["error_description"]
    assert last_reason(world) == f"subject.{claim}_too_long"
    # At the bound the token is accepted (a sub no rule names is then refused by the
    # rules), and the audit row holds the value whole.
    world.exchange(world.ci_token(**{claim: "x" * bound}), audience=DEPLOY)
    row = world.audit_rows()[-1]
    assert row["reason"] != f"subject.{claim}_too_long"
    assert row[column] == "x" * bound


def test_an_actor_past_1024_characters_is_refused_and_recorded(world: World) -> None:
    actor = world.agent_token(sub="a" * 1025)
    refused = world.agent_exchange(actor, audience=PROJECT, scope="issues:write")
    assert refused.status_code == 400
    assert "actor token has a sub longer" in refused.json["error_description"]
    assert last_reason(world) == "actor.sub_too_long"


@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_a_client_assertion_jti_past_255_characters_is_invalid_client(world: World) -> None:
    refused = exchange_with_assertion(world, world.workload_assertion(jti="k" * 256), VAULT)
    assert refused.status_code == 401
    assert refused.json["error"] == "invalid_client"
    assert last_reason(world) == "client.assertion_jti"
    granted = exchange_with_assertion(world, world.workload_assertion(jti="k" * 255), VAULT)
    assert granted.status_code == 200, granted.json


def allow_delegated_ci_tokens(world: World) -> None:
    """The CI deploy rule, with an ``actor`` section: an upstream token delegated by its
    issuer (``act``) is then allowed, up to 10 actors (sts.policy.evaluate.match_actor)."""
    rule = RULES["payments-prod-deploy"]
    world.put_rule("payments-prod-deploy", {**rule, "actor": {"max_chain_depth": 10}})


def test_an_upstream_act_sub_that_the_lineage_cannot_hold_is_refused(world: World) -> None:
    """RFC 8693 §4.1: ``act.sub`` names the actor; an upstream token's ``act`` is carried
    into the new token and its ``sub`` into the lineage (``actor``, 1024 characters)."""
    allow_delegated_ci_tokens(world)
    for act in ({"sub": "a" * 1025}, {"sub": 7}):
        refused = world.exchange(world.ci_token(act=act), audience=DEPLOY)
        assert refused.status_code == 400
        assert last_reason(world) == "subject.act_sub"
    assert (
        world.exchange(world.ci_token(act={"sub": "a" * 1024}), audience=DEPLOY).status_code == 200
    )


# A NUL (PostgreSQL's text refuses it) and a lone surrogate ("\ud800" in JSON: no UTF-8
# form) fail the row's insert, as an over-long value did: a 503, and nothing recorded.
UNSTORABLE = [pytest.param("a\x00b", id="nul"), pytest.param("a\ud800b", id="surrogate")]


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize("claim", ["sub", "jti"])
def test_a_subject_token_claim_the_rows_cannot_hold_is_refused_and_recorded(
    world: World, claim: str, value: str
) -> None:
    refused = world.exchange(world.ci_token(raw=True, **{claim: value}), audience=DEPLOY)
    assert refused.status_code == 400, refused.json
    assert refused.json["error"] == "invalid_request"
    assert last_reason(world) == "subject.characters"


@pytest.mark.parametrize("value", UNSTORABLE)
def test_an_actor_the_lineage_cannot_hold_is_refused(world: World, value: str) -> None:
    refused = world.agent_exchange(world.agent_token(sub=value, raw=True), audience=PROJECT)
    assert refused.status_code == 400, refused.json
    assert last_reason(world) == "actor.characters"
    refused = world.exchange(world.ci_token(act={"sub": value}, raw=True), audience=DEPLOY)
    assert refused.status_code == 400, refused.json
    assert last_reason(world) == "subject.act_sub"


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.usefixtures("workload_reads_secrets_with_ci_tokens")
def test_a_client_assertion_jti_the_rows_cannot_hold_is_invalid_client(
    world: World, value: str
) -> None:
    assertion = world.workload_assertion(raw=True, jti=value)
    refused = exchange_with_assertion(world, assertion, VAULT)
    assert refused.status_code == 401, refused.json
    assert last_reason(world) == "client.assertion_jti"


def test_a_nul_in_a_parameter_is_refused_before_anything_is_recorded(world: World) -> None:
    """RFC 6749 Appendix A: no parameter admits %x00 (here in ``scope``, which the
    refusal's audit row would hold)."""
    refused = world.exchange(world.ci_token(), audience=DEPLOY, scope="deploy:write\x00")
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"
    assert "NUL" in refused.json["error_description"]
    revoke = world.revoke("token\x00")
    assert revoke.status_code == 400
    assert revoke.json["error"] == "invalid_request"


NESTED = "[" * 5000 + "]" * 5000  # past the interpreter's recursion limit when parsed


def unsigned_token(payload: str) -> str:
    """A compact JWS whose payload is ``payload`` as is; its signature is junk (a payload
    is parsed before any signature is checked)."""

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    return f"{b64(json.dumps({'alg': 'ES256', 'typ': 'JWT'}))}.{b64(payload)}.{b64('sig')}"


def test_json_nested_past_the_recursion_limit_is_a_refusal_not_a_500(world: World) -> None:
    """Each place that parses an untrusted JWT before verifying it: the subject token, a
    client assertion (whose unverified ``sub`` names the client) and an exposure report
    (public). A RecursionError there was an HTTP 500."""
    token = unsigned_token(NESTED)
    refused = world.exchange(token, audience=DEPLOY)
    assert refused.status_code == 400, refused.json
    assert last_reason(world) == "subject.malformed"

    assertion = [("client_assertion_type", JWT_BEARER_ASSERTION), ("client_assertion", token)]
    unknown = world.exchange(world.ci_token(), audience=DEPLOY, auth=None, form=assertion)
    assert unknown.status_code == 401, unknown.json

    reported = world.client.post("/exposure-reports", data={"token": token})
    assert reported.status_code == 202


@pytest.mark.parametrize("alg", ["ES256\x00", "\ud800"], ids=["nul", "surrogate"])
def test_an_unverified_alg_is_quoted_in_the_recorded_refusal(world: World, alg: str) -> None:
    """The refusal's detail names the header's ``alg``, unverified: quoted, it cannot
    fail the audit insert (a NUL did on PostgreSQL; a lone surrogate was a 500)."""
    header = {"alg": alg, "kid": world.ci.kid, "typ": "JWT"}
    claims = {"iss": world.ci.issuer, "sub": "x", "aud": "https://sts.test", "exp": world.now()}
    refused = world.exchange(world.ci.mint_raw(header, claims), audience=DEPLOY)
    assert refused.status_code == 400, refused.json
    row = world.audit_rows()[-1]
    assert row["reason"] == "subject.alg"
    assert row["detail"] == f"alg={alg!r}"


def test_an_act_chain_past_32_actors_is_refused(world: World) -> None:
    """RFC 8693 §4.1 nests earlier actors in ``act``; one nested ~940 deep made signing
    the new token fail after its records were committed (a 503)."""

    def chain(depth: int) -> dict[str, object]:
        act: dict[str, object] = {"sub": "agent-0"}
        for level in range(1, depth):
            act = {"sub": f"agent-{level}", "act": act}
        return act

    allow_delegated_ci_tokens(world)
    refused = world.exchange(world.ci_token(act=chain(33)), audience=DEPLOY)
    assert refused.status_code == 400, refused.json
    assert last_reason(world) == "subject.act_depth"
    # 32 pass verification; no rule allows more than 10 actors (max_chain_depth)
    deep = world.exchange(world.ci_token(act=chain(32)), audience=DEPLOY)
    assert deep.status_code == 400, deep.json
    assert last_reason(world) == "policy.no_matching_rule"
    granted = world.exchange(world.ci_token(act=chain(10)), audience=DEPLOY)
    assert granted.status_code == 200, granted.json
