"""Exposure reports: possession is the proof; the answer is the same for every token."""

from __future__ import annotations

import threading
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from sts.credentials import generate_api_key
from sts.db import queries
from tests.conftest import TEST_ISSUER
from tests.integration.test_offboarding import sts
from tests.integration.world import DEPLOY, PROJECT, World, claims_of
from tests.issuer import TestIssuer


def report(world: World, token: str, address: str = "203.0.113.7", **extra: str) -> TestResponse:
    return world.client.post(
        "/exposure-reports",
        data=urlencode({"token": token, **extra}),
        content_type="application/x-www-form-urlencoded",
        headers={"User-Agent": "secret-scanner/1.0"},
        environ_base={"REMOTE_ADDR": address},
    )


def shape(response: TestResponse) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
    return response.status_code, response.get_data(), headers


def test_valid_invalid_and_expired_tokens_get_identical_answers(world: World) -> None:
    expired = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    world.clock.advance(400)  # `expired` is now past exp + leeway
    live_chain = world.chain()
    unknown_key = generate_api_key().key
    answers = [
        report(world, live_chain[0], found_at="https://ci.example/build/42/log"),
        report(world, "not a token at all"),
        report(world, expired),
        report(world, unknown_key),
    ]
    assert answers[0].status_code == 202
    assert answers[0].json == {"status": "accepted"}
    assert len({repr(shape(a)) for a in answers}) == 1  # no oracle
    # Only the valid one was revoked, with everything exchanged from it.
    assert [world.is_active(t) for t in live_chain] == [False, False, False]
    rows = [r for r in world.audit_rows() if r["event"] == "exposure_report"]
    assert [r["reason"] for r in rows] == [
        "exposure.access_token_revoked",
        "exposure.unknown",
        "exposure.unknown",
        "exposure.unknown",
    ]
    assert "203.0.113.7" in rows[0]["detail"] and "secret-scanner/1.0" in rows[0]["detail"]
    assert "ci.example/build/42" in rows[0]["detail"]
    assert all(live_chain[0] not in str(r) for r in world.audit_rows())


def test_a_reported_upstream_token_is_blocked_and_what_it_minted_revoked(world: World) -> None:
    """A CI token found in a build log: possession of a live token of a trusted issuer is
    the proof. sts revokes what it was exchanged for (and their descendants) and refuses
    it from then on; the answer is the one every report gets."""
    leaked = world.ci_token()
    first = world.exchange(leaked, audience=DEPLOY).json["access_token"]
    second = world.workload_exchange(first, audience=DEPLOY).json["access_token"]
    unrelated = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]

    answer = report(world, leaked, found_at="https://ci.example/build/7/log")
    assert shape(answer) == shape(report(world, "not a token at all"))
    assert not world.is_active(first) and not world.is_active(second)
    assert world.is_active(unrelated)
    rows = [r for r in world.audit_rows() if r["event"] == "exposure_report"]
    assert rows[0]["reason"] == "exposure.upstream_token_blocked"
    assert rows[0]["subject_token_id"] == claims_of(leaked)["jti"]
    assert "revoked 2 token(s)" in rows[0]["detail"]
    assert all(leaked not in str(r) for r in world.audit_rows())

    refused = world.exchange(leaked, audience=DEPLOY)
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.upstream_token"


def test_an_upstream_token_that_would_not_be_accepted_blocks_nothing(world: World) -> None:
    """Only a token sts would accept is acted on: one for another audience, from an
    untrusted issuer, or expired, is an unknown string (and the same answer)."""
    untrusted = TestIssuer("https://untrusted.example")
    refused = {
        "other-audience": world.ci_token(aud="https://not-this-sts.example", jti="j1"),
        "untrusted": untrusted.mint(now=world.now(), aud=TEST_ISSUER, jti="j2"),
        "expired": world.ci_token(lifetime=60, jti="j3"),
    }
    world.clock.advance(120)
    for token in refused.values():
        assert shape(report(world, token)) == shape(report(world, "junk"))
    with world.app.extensions["sts"].session_factory() as session:
        assert (
            queries.active_blocks(session, [("upstream_token", j) for j in ["j1", "j2", "j3"]])
            == []
        )
    reasons = {r["reason"] for r in world.audit_rows() if r["event"] == "exposure_report"}
    assert reasons == {"exposure.unknown"}


def test_a_reported_token_cannot_reach_a_credential_by_mimicking_its_id(world: World) -> None:
    """The lineage names a service credential presented as ``credential:<name>``, in the
    column that names an upstream token by its jti: a reported token whose jti is that
    string (any trusted issuer will sign what its caller asks for in some claims) revokes
    nothing minted with the credential."""
    minted = world.agent_exchange(world.agent_token(), audience=PROJECT, scope="issues:write")
    assert minted.status_code == 200
    mimic = world.ci_token(jti="credential:agent-key", sub="team-alpha-automation")
    assert report(world, mimic).status_code == 202
    assert world.is_active(minted.json["access_token"])


def test_a_second_report_of_a_blocked_token_holds_no_exchange_back(world: World) -> None:
    """Once a token is blocked (and swept, under the governance lock), a report of it
    again takes no lock: the public endpoint cannot be used to stall exchanges by
    reporting one token over and over. PostgreSQL: SQLite's single writer serialises
    the report behind an exchange's transaction anyway."""
    services = world.app.extensions["sts"]
    if services.engine.dialect.name != "postgresql":
        pytest.skip("the governance lock is PostgreSQL's (SQLite has one writer)")
    leaked = world.ci_token()
    assert report(world, leaked).status_code == 202
    with services.exchange_store.write() as exchange:
        exchange.hold_governance_shared()  # as an exchange in flight holds it
        outcome: list[int] = []
        thread = threading.Thread(
            target=lambda: outcome.append(report(world, leaked).status_code), daemon=True
        )
        thread.start()
        thread.join(5)
        finished = not thread.is_alive()
        exchange.commit()
    thread.join(10)
    assert finished and outcome == [202]


def test_reported_credential_is_disabled(world: World) -> None:
    assert (
        world.agent_exchange(
            world.agent_token(), audience=PROJECT, scope="issues:write"
        ).status_code
        == 200
    )
    assert report(world, world.api_key).status_code == 202
    refused = world.agent_exchange(world.agent_token(), audience=PROJECT, scope="issues:write")
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "subject.credential_disabled"


def test_a_reported_credential_stays_out_when_a_rules_revision_turns_it_back_on(
    world: World,
) -> None:
    """A rules revision writes a credential's ``disabled`` flag (a rollback, or one
    generated from a file that does not say ``disabled: true``): the block stored with
    the report is what keeps the leaked key out."""
    assert report(world, world.api_key).status_code == 202
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        credential = queries.credential_by_name(session, "agent-key")
        assert credential is not None
        queries.set_credential_disabled(session, credential.id, False, world.clock())
        session.commit()
    services.trust.invalidate()
    refused = world.agent_exchange(world.agent_token(), audience=PROJECT, scope="issues:write")
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.credential"


def test_reports_are_rate_limited_per_address(world: World) -> None:
    limiter = world.app.extensions["sts_exposure_limiter"]
    seconds = [0.0]
    limiter.monotonic = lambda: seconds[0]
    for _ in range(limiter.limit):
        assert report(world, "junk", address="198.51.100.1").status_code == 202
    limited = report(world, "junk", address="198.51.100.1")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"]
    assert report(world, "junk", address="198.51.100.2").status_code == 202  # per address
    seconds[0] += 61
    assert report(world, "junk", address="198.51.100.1").status_code == 202


def test_an_ipv6_host_cannot_escape_the_limit_by_changing_its_address(world: World) -> None:
    limiter = world.app.extensions["sts_exposure_limiter"]
    limiter.monotonic = lambda: 0.0
    for host in range(limiter.limit):
        assert report(world, "junk", address=f"2001:db8:7:7::{host + 1:x}").status_code == 202
    assert report(world, "junk", address="2001:db8:7:7::ffff").status_code == 429
    assert report(world, "junk", address="2001:db8:7:8::1").status_code == 202  # another /64


def report_via_proxy(client: FlaskClient, client_address: str) -> TestResponse:
    """A report relayed by a reverse proxy at 10.0.0.2, which names the client it saw."""
    return client.post(
        "/exposure-reports",
        data=urlencode({"token": "junk"}),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Forwarded-For": client_address},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )


@pytest.mark.parametrize("trusted_proxies", [0, 1])
def test_behind_a_trusted_proxy_each_client_has_its_own_limit(  # type: ignore[no-untyped-def]
    empty_database_url: str, make_settings, trusted_proxies: int
) -> None:
    """STS_TRUSTED_PROXIES=1: the limit counts the client the proxy names; 0 (the
    default): the proxy's own address, whatever X-Forwarded-For says (anyone can send
    that header)."""
    from sts.app import create_app

    settings = make_settings(
        empty_database_url, exposure_rate_limit=1, trusted_proxies=trusted_proxies
    )
    app = create_app(settings)
    client = app.test_client()
    try:
        assert report_via_proxy(client, "198.51.100.1").status_code == 202
        assert report_via_proxy(client, "198.51.100.1").status_code == 429
        other_client = report_via_proxy(client, "198.51.100.2").status_code
        assert other_client == (202 if trusted_proxies else 429)
    finally:
        app.extensions["sts"].engine.dispose()


def test_missing_token_is_invalid_request(world: World) -> None:
    response = world.client.post("/exposure-reports", data={"found_at": "x"})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_a_reported_token_blocks_its_issuers_jti_not_another_issuers(world: World) -> None:
    """RFC 7519 §4.1.7: a jti is unique per issuer. A trusted issuer whose tenant picks
    jtis could otherwise report a token of its own carrying another issuer's jti and have
    that token refused. The report's block names the jti under the reported token's
    issuer; an operator's (``sts revoke --upstream-token``) names it under every issuer,
    and ``--lift`` lifts both."""
    shared = "shared-jti"
    assert shape(report(world, world.ci_token(jti=shared))) == shape(report(world, "junk"))
    refused = world.exchange(world.ci_token(jti=shared), audience=DEPLOY)
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.upstream_token"
    # The agents issuer's token with the same jti, presented as the actor token.
    acted = world.agent_exchange(world.agent_token(jti=shared), audience=PROJECT)
    assert acted.status_code == 200, acted.json

    assert sts(world, "revoke", "--upstream-token", shared).exit_code == 0
    again = world.agent_exchange(world.agent_token(jti=shared), audience=PROJECT)
    assert again.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.upstream_token"

    lifted = sts(world, "revoke", "--lift", "--upstream-token", shared)
    assert "lifted 2 block(s)" in lifted.output
    assert world.exchange(world.ci_token(jti=shared), audience=DEPLOY).status_code == 200
