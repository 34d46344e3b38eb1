"""``sts exposure``: everything minted from a leaked upstream token, presented as the
subject or as the actor token, then revoked, and the token blocked from new exchanges."""

from __future__ import annotations

import base64

from click.testing import CliRunner, Result

from sts.cli import cli
from sts.db import queries
from sts.tokens.verify import token_fingerprint
from tests.integration.test_offboarding import claim, sts
from tests.integration.world import DEPLOY, PROJECT, World, claims_of


def sts_with_stdin(world: World, stdin: str, *args: str) -> Result:
    settings = world.app.extensions["sts"].settings
    env = {"STS_ISSUER": settings.issuer, "STS_DATABASE_URL": settings.effective_database_url}
    result = CliRunner().invoke(cli, list(args), input=stdin, env=env, obj={"clock": world.clock})
    assert result.exit_code == 0, result.output
    return result


def test_exposure_lists_and_revokes_what_a_leaked_token_was_exchanged_for(world: World) -> None:
    leaked = world.ci_token()
    first = world.exchange(leaked, audience=DEPLOY).json["access_token"]
    second = world.workload_exchange(first, audience=DEPLOY).json["access_token"]
    unrelated = world.chain()[0]

    report = sts_with_stdin(world, leaked, "exposure", "--token-stdin")
    assert "2 token(s) derived from" in report.output
    assert claim(first, "jti") in report.output and claim(second, "jti") in report.output
    assert leaked not in report.output  # the leaked token itself is never printed
    assert world.is_active(first)

    revoked = sts(world, "exposure", "--token-id", claim(leaked, "jti"), "--revoke")
    assert "revoked 2 token(s)" in revoked.output
    assert not world.is_active(first) and not world.is_active(second)
    assert world.is_active(unrelated)
    assert sts(world, "exposure").exit_code != 0  # exactly one of --token-id, --token-stdin


def test_a_revoked_upstream_token_is_refused_until_lifted(world: World) -> None:
    """sts cannot revoke another issuer's token, but it refuses it: the leaked token, still
    valid at its issuer, gets nothing more; a fresh token of the same subject does."""
    leaked = world.ci_token()
    assert world.exchange(leaked, audience=DEPLOY).status_code == 200
    revoked = sts(world, "exposure", "--token-id", claim(leaked, "jti"), "--revoke")
    assert revoked.exit_code == 0, revoked.output
    assert "is blocked from new exchanges" in revoked.output

    refused = world.exchange(leaked, audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json == {
        "error": "invalid_request",
        "error_description": "The subject or actor token has been revoked.",
    }
    assert world.audit_rows()[-1]["reason"] == "blocked.upstream_token"
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200

    lifted = sts(world, "revoke", "--lift", "--upstream-token", claim(leaked, "jti"))
    assert "lifted 1 block(s)" in lifted.output
    assert world.exchange(leaked, audience=DEPLOY).status_code == 200


def test_a_token_without_a_jti_is_named_by_its_fingerprint(world: World) -> None:
    leaked = world.ci_token(jti=None)
    assert "jti" not in claims_of(leaked)
    minted = world.exchange(leaked, audience=DEPLOY).json["access_token"]

    revoked = sts(world, "revoke", "--upstream-token", token_fingerprint(leaked))
    assert "revoked 1 token(s)" in revoked.output
    assert not world.is_active(minted)
    assert world.exchange(leaked, audience=DEPLOY).status_code == 400


def test_a_leaked_actor_token_reaches_the_tokens_it_acted_in(world: World) -> None:
    """RFC 8693 §4.1: the actor is a party to the token. An agent's upstream JWT that
    leaked is found where it was presented as ``actor_token``, and refused there after."""
    leaked = world.agent_token()
    acted = world.agent_exchange(leaked, audience=PROJECT, scope="issues:write")
    assert acted.status_code == 200, acted.json
    minted = acted.json["access_token"]
    other = world.agent_exchange(world.agent_token(), audience=PROJECT, scope="issues:write")
    assert other.status_code == 200

    # With the token itself, the lookup is narrowed by its sub (the agent's): the token it
    # acted in has another subject, and is found on the actor's side.
    listed = sts_with_stdin(world, leaked, "exposure", "--token-stdin")
    assert "1 token(s) derived from" in listed.output
    assert claim(minted, "jti") in listed.output

    revoked = sts(world, "exposure", "--token-id", claim(leaked, "jti"), "--revoke")
    assert "revoked 1 token(s)" in revoked.output
    assert not world.is_active(minted)
    assert world.is_active(other.json["access_token"])
    refused = world.agent_exchange(leaked, audience=PROJECT, scope="issues:write")
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.upstream_token"


def test_a_token_named_by_id_alone_is_looked_up_by_its_sub_before_the_lock(
    world: World,
) -> None:
    """``sts revoke --upstream-token ID`` learns the token's sub from a token exchanged
    from it (a scan, before the governance lock, so no exchange waits for it); under the
    lock the sweep then goes through ``subject``'s index."""
    leaked = world.ci_token()
    assert world.exchange(leaked, audience=DEPLOY).status_code == 200
    with world.app.extensions["sts"].session_factory() as session:
        found = queries.subject_of_upstream_token(session, claim(leaked, "jti"))
        assert found == claims_of(leaked)["sub"]
        assert queries.subject_of_upstream_token(session, "never-presented") is None
        # The roots every caller sweeps (sts revoke, sts exposure) carry that sub, and the
        # same rows are found as by the id alone.
        roots = queries.find_upstream_token_roots(session, claim(leaked, "jti"), None, None)
        assert found in {str(value) for value in roots.compile().params.values()}
        by_id = queries.upstream_token_roots(claim(leaked, "jti"), None)
        listed = [row.jti for row in queries.lineage_tokens(session, roots)]
        assert listed == [row.jti for row in queries.lineage_tokens(session, by_id)]
        assert len(listed) == 1


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def ecdsa_twin(token: str) -> str:
    """The same ES256 token with its other valid signature, (r, n - s)."""
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    twin = r + (P256_ORDER - s).to_bytes(32, "big")
    return f"{header}.{payload}.{base64.urlsafe_b64encode(twin).rstrip(b'=').decode()}"


def test_a_token_blocked_by_fingerprint_cannot_come_back_with_its_twin_signature(
    world: World,
) -> None:
    leaked = world.ci_token(jti=None)
    twin = ecdsa_twin(leaked)
    assert twin != leaked
    assert world.exchange(twin, audience=DEPLOY).status_code == 200  # it verifies
    sts(world, "revoke", "--upstream-token", token_fingerprint(leaked))
    for presented in (leaked, twin):
        refused = world.exchange(presented, audience=DEPLOY)
        assert refused.status_code == 400
        assert world.audit_rows()[-1]["reason"] == "blocked.upstream_token"
