"""Scenario ``ci-deploy-dpop``: a pool of CI exchanges, each with its own DPoP proof (RFC
9449), sized so that the load generator never sends a proof twice; the bench's limits on
it; and a short run against a real ``sts serve`` on SQLite."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from bench import servers
from bench.__main__ import parse_args, requests_for
from bench.loadgen import Client, LoadSpec, build_request, run_load
from bench.profile import app_in_process, in_process_parser
from bench.scenarios import (
    CEILING_PER_SECOND,
    MAX_SINGLE_USE_POOL,
    POOL_MARGIN,
    SCENARIOS,
    TOKEN_PATH,
    single_use_pool,
)
from bench.world import DPOP_PROOF_MAX_AGE, STS_ISSUER, PeerTokens, World, database_url, seed
from sts.tokens.dpop import DpopProof, verify_dpop_proof

DPOP = SCENARIOS["ci-deploy-dpop"]
LEEWAY = 30  # sts's default STS_CLOCK_LEEWAY, which the bench server keeps


def world_of(ci_tokens: list[str], proof_pool: int, tmp_path: Path) -> World:
    """What the scenario reads of a world: CI tokens (opaque strings here: the requests
    are only built, not sent) and the pool's size."""
    return World(
        database="sqlite",
        env={},
        ci_tokens=ci_tokens,
        agent_tokens=[],
        api_key="",
        peer=PeerTokens({}, [], "none"),
        upstream_jwks_path=tmp_path / "jwks.json",
        proof_pool=proof_pool,
    )


def parts_of(raw: bytes) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A pre-built request's header fields and form."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    return fields, parse_qs(body.decode())


def check(proof: str) -> DpopProof:
    """The server's own checks of a proof at the token endpoint, now."""
    checked = verify_dpop_proof(
        proof,
        method="POST",
        uri=STS_ISSUER + TOKEN_PATH,
        now=datetime.now(UTC),
        max_age=DPOP_PROOF_MAX_AGE,
        leeway=LEEWAY,
    )
    assert checked is not None
    return checked


# ---- the request builder ---------------------------------------------------------------


def test_extra_headers_follow_the_others_in_order_before_the_blank_line() -> None:
    raw = build_request(8080, "/token", [("a", "b")], headers=[("DPoP", "p.q.r"), ("X-N", "2")])
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[-2:] == [b"DPoP: p.q.r", b"X-N: 2"]
    assert body == b"a=b"


def test_without_extra_headers_a_request_is_what_it_was() -> None:
    expected = (
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n"
        b"Accept: application/json\r\nAuthorization: Basic aWQ6c2VjcmV0\r\n\r\na=b"
    )
    assert build_request(8080, "/token", [("a", "b")], ("id", "secret")) == expected
    assert build_request(8080, "/token", [("a", "b")], ("id", "secret"), headers=()) == expected


# ---- the pool ----------------------------------------------------------------------------


def test_a_pool_lasts_every_connection_through_the_run_at_the_ceiling() -> None:
    seconds, connections = 8.0, 8
    size = single_use_pool(seconds, connections)
    assert size >= CEILING_PER_SECOND * seconds * POOL_MARGIN
    # Each connection thread walks size // connections requests before another's share.
    assert size // connections > CEILING_PER_SECOND * seconds / connections
    # An open loop's pool is sized at its own rate.
    assert single_use_pool(seconds, connections, 100) < 1100
    with pytest.raises(ValueError, match="shorten the run"):
        single_use_pool(MAX_SINGLE_USE_POOL / CEILING_PER_SECOND, connections)


def test_the_pool_holds_one_valid_proof_per_request_each_its_own(tmp_path: Path) -> None:
    tokens = ["ci-token-0", "ci-token-1", "ci-token-2"]
    pool = DPOP.build(world_of(tokens, 500, tmp_path), 8080)
    assert len(pool) == 500
    requests = [parts_of(raw) for raw in pool]
    proofs = [fields["DPoP"] for fields, _form in requests]
    # The exchange of ci-deploy: its CI tokens round robin, its audience and scope.
    assert [form["subject_token"][0] for _fields, form in requests[:4]] == [*tokens, tokens[0]]
    assert {(form["audience"][0], form["scope"][0]) for _fields, form in requests} == {
        ("https://deploy.acme.internal", "deploy:write")
    }
    # One key (one header segment), a new jti each.
    assert len({proof.partition(".")[0] for proof in proofs}) == 1
    checked = [check(proof) for proof in proofs[::25]]
    assert len({proof.jkt for proof in checked}) == 1
    jtis = [json.loads(_segment(proof, 1))["jti"] for proof in proofs]
    assert len(set(jtis)) == len(proofs)
    assert [proof.jti for proof in checked] == jtis[::25]


def test_each_pool_has_its_own_key_and_jtis(tmp_path: Path) -> None:
    first, second = (DPOP.build(world_of(["t"], 5, tmp_path), 8080) for _ in range(2))
    proofs = [parts_of(raw)[0]["DPoP"] for raw in first + second]
    assert len({json.loads(_segment(proof, 1))["jti"] for proof in proofs}) == 10
    assert len({proof.partition(".")[0] for proof in proofs}) == 2


def test_an_unsized_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="proof_pool"):
        DPOP.build(world_of(["t"], 0, tmp_path), 8080)


def _segment(compact: str, index: int) -> bytes:
    part = compact.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ---- where the scenario runs, and where it does not -------------------------------------


def test_the_run_mode_takes_it_by_default_and_refuses_a_run_it_cannot_last() -> None:
    assert "ci-deploy-dpop" in parse_args([]).scenarios
    assert parse_args(["--scenarios", "ci-deploy-dpop", "--duration", "30"]).duration == 30
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "ci-deploy-dpop", "--duration", "100"])
    with pytest.raises(SystemExit):  # proofs made before the wait would be stale by the end
        parse_args(["--scenarios", "ci-deploy-dpop", "--quiet-wait", "850"])
    # Without it, a long run is what it was; the peers mode never runs it.
    assert parse_args(["--scenarios", "ci-deploy", "--duration", "100"]).duration == 100
    assert parse_args(["peers", "--duration", "100"]).duration == 100


def test_soak_refuses_it_and_latency_sizes_its_pools(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["soak", "--scenario", "ci-deploy-dpop"])
    assert "soak cannot run ci-deploy-dpop" in capsys.readouterr().err
    assert parse_args(["latency", "--scenario", "ci-deploy-dpop"]).scenario == "ci-deploy-dpop"
    with pytest.raises(SystemExit):
        parse_args(
            ["latency", "--scenario", "ci-deploy-dpop", "--rate", "9000", "--duration", "60"]
        )


def test_the_in_process_tools_do_not_take_it() -> None:
    """They send their pool more than once (warm-up, rounds): a proof would be replayed."""
    with pytest.raises(SystemExit):
        in_process_parser("t", requests=1).parse_args(["--scenario", "ci-deploy-dpop"])
    with (
        pytest.raises(ValueError, match=r"bench\.dpop"),
        app_in_process("sqlite", "", 1, "ci-deploy-dpop"),
    ):
        pass


# ---- through a real sts serve ------------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(_segment(token, 1))
    return document


@pytest.mark.slow
def test_a_short_load_against_sts_serve_sends_no_proof_twice(tmp_path: Path) -> None:
    """Two seconds of closed loop over the pool the runner would build: no errors (a
    replayed or refused proof would be one); then one more exchange binds its token to the
    proof's key, and the same request again is refused as a replay."""
    with database_url("sqlite", tmp_path, "") as url:
        world = seed("sqlite", tmp_path, url, 20, PeerTokens({}, [], "none"))
        port = servers.free_port()
        command = servers.command_for("sts", port, 1, "granian", 2)
        log = tmp_path / "sts.log"
        with servers.running(command, "sts", port, world.env, log, "/readyz") as running:
            spec = LoadSpec(
                port=port,
                requests=requests_for(DPOP, world, port, 2.5, 4),
                duration=2.0,
                warmup=0.5,
                concurrency=4,
                processes=1,
            )
            result = run_load(spec, server_pid=running.pid)
            assert result.errors == {}, result.error_samples
            assert result.ok > 0

            raw = requests_for(DPOP, world, port, 0.001, 1)[0]
            client = Client(port, timeout=10)
            try:
                status, body = client.request(raw)
                replay_status, replay = client.request(raw)
            finally:
                client.close()
    assert status == 200, body
    answer = json.loads(body)
    assert answer["token_type"] == "DPoP"
    proof = check(parts_of(raw)[0]["DPoP"])
    assert _claims(answer["access_token"])["cnf"] == {"jkt": proof.jkt}
    assert replay_status == 400
    assert json.loads(replay)["error"] == "invalid_dpop_proof"
