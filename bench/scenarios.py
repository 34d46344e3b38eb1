"""The exchanges the bench drives, as pools of pre-built HTTP requests."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from bench import proofs
from bench.loadgen import build_request, post_all
from bench.world import (
    AGENT_CLIENT,
    CI_CLIENT,
    DEPLOY,
    PEER_CLIENT,
    PEER_ORDERS,
    PROJECT,
    STS_ISSUER,
    VAULT,
    WORKLOAD_CLIENT,
    World,
)
from sts.protocol import (
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_API_KEY,
    TOKEN_TYPE_JWT,
)

TOKEN_PATH = "/token"
# Sizing a pool of single-use requests: a ceiling on any row's exchanges per second, about
# twice the fastest sts row measured on the bench's 2-core box (~3,100, ci-deploy on SQLite;
# a DPoP exchange costs more), so that a connection thread that gets more than its even
# share of the load still stays within its share of the pool; then a margin on top.
CEILING_PER_SECOND = 6000
POOL_MARGIN = 1.25
# A request takes ~75 µs to make (the proof's signature most of it) and ~1.5 kB: this
# many, ~40 s and ~750 MB. Past it, shorten the run.
MAX_SINGLE_USE_POOL = 500_000


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    build: Callable[[World, int], list[bytes]]
    # Each request can be sent only once (a DPoP proof's jti): ``build`` makes
    # ``World.proof_pool`` of them, which the runner sizes from the run.
    single_use: bool = False


def single_use_pool(seconds: float, concurrency: int, rate: float = CEILING_PER_SECOND) -> int:
    """How many single-use requests ``seconds`` of load (warmup included) at up to ``rate``
    per second need: the load generator's connection threads each walk their own share of
    the pool (``LoadSpec.requests``), and every share must outlast the run. Raises
    ValueError when that is more than a pool should hold."""
    # + 2 a connection: its share rounded down, an open loop's request due at the very end.
    size = math.ceil(rate * seconds * POOL_MARGIN) + 2 * concurrency
    if size > MAX_SINGLE_USE_POOL:
        raise ValueError(
            f"{seconds:g} s of load at up to {rate:.0f} exchanges/s needs {size:,} single-use "
            f"requests (DPoP proofs), more than {MAX_SINGLE_USE_POOL:,}: shorten the run"
        )
    return size


def _exchange(subject: str, subject_type: str, **params: str) -> list[tuple[str, str]]:
    return [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
        *params.items(),
    ]


def _ci_deploy_form(token: str) -> list[tuple[str, str]]:
    return _exchange(token, TOKEN_TYPE_JWT, audience=DEPLOY, scope="deploy:write")


def ci_deploy(world: World, port: int) -> list[bytes]:
    """1. external CI JWT -> deploy token, client_secret_basic."""
    return [
        build_request(port, TOKEN_PATH, _ci_deploy_form(token), CI_CLIENT)
        for token in world.ci_tokens
    ]


def ci_deploy_dpop(world: World, port: int) -> list[bytes]:
    """1b. the same exchange (CI tokens round robin) with a fresh DPoP proof each, all
    signed by one ES256 key, as one workload would: the token is bound to that key
    (``cnf.jkt``, ``token_type: DPoP``). A proof is good once: ``world.proof_pool``
    requests, each to be sent at most once."""
    if world.proof_pool < 1:
        raise ValueError("ci-deploy-dpop needs World.proof_pool, sized from the run")
    signed = proofs.make_proofs(proofs.generate_key(), world.proof_pool, STS_ISSUER + TOKEN_PATH)
    tokens = world.ci_tokens
    return [
        build_request(
            port,
            TOKEN_PATH,
            _ci_deploy_form(tokens[number % len(tokens)]),
            CI_CLIENT,
            headers=[("DPoP", proof)],
        )
        for number, proof in enumerate(signed)
    ]


def agent_act(world: World, port: int) -> list[bytes]:
    """2. API key + agent JWT (actor) -> agent token with ``act``, client_secret_post."""
    return [
        build_request(
            port,
            TOKEN_PATH,
            _exchange(
                world.api_key,
                TOKEN_TYPE_API_KEY,
                actor_token=actor,
                actor_token_type=TOKEN_TYPE_JWT,
                audience=PROJECT,
                scope="issues:write",
                client_id=AGENT_CLIENT[0],
                client_secret=AGENT_CLIENT[1],
            ),
        )
        for actor in world.agent_tokens
    ]


def premint_sts_tokens(world: World, port: int) -> None:
    """Mint a pool of sts tokens through the running server (two audiences, three scopes)
    so that scenario 3 can narrow them."""
    requests = [
        build_request(
            port,
            TOKEN_PATH,
            [
                *_exchange(token, TOKEN_TYPE_JWT, audience=DEPLOY),
                ("audience", VAULT),
                ("scope", "deploy:write deploy:read secrets:read"),
            ],
            CI_CLIENT,
        )
        for token in world.ci_tokens
    ]
    bodies = post_all(port, requests)
    world.sts_tokens = [json.loads(body)["access_token"] for body in bodies]


def re_exchange(world: World, port: int) -> list[bytes]:
    """3. an sts token -> a narrower sts token (rule ``subject_token: {sts: true}``)."""
    if not world.sts_tokens:
        premint_sts_tokens(world, port)
    return [
        build_request(
            port,
            TOKEN_PATH,
            _exchange(token, TOKEN_TYPE_ACCESS_TOKEN, audience=DEPLOY, scope="deploy:read"),
            WORKLOAD_CLIENT,
        )
        for token in world.sts_tokens
    ]


def peer_requests(tokens: list[str], port: int, path: str = TOKEN_PATH) -> list[bytes]:
    """The peers' contract: external JWT -> access token, client_secret_basic, one
    audience, one scope."""
    return [
        build_request(
            port,
            path,
            _exchange(token, TOKEN_TYPE_JWT, audience=PEER_ORDERS, scope="orders:read"),
            PEER_CLIENT,
        )
        for token in tokens
    ]


def peer_shape(world: World, port: int) -> list[bytes]:
    return peer_requests(world.peer.tokens, port)


SCENARIOS = {
    "ci-deploy": Scenario("ci-deploy", "1. CI JWT -> deploy token", ci_deploy),
    "ci-deploy-dpop": Scenario(
        "ci-deploy-dpop",
        "1b. CI JWT + DPoP proof -> bound deploy token",
        ci_deploy_dpop,
        single_use=True,
    ),
    "agent-act": Scenario("agent-act", "2. API key + agent JWT -> act", agent_act),
    "re-exchange": Scenario("re-exchange", "3. sts token -> narrower", re_exchange),
    "peer-shape": Scenario("peer-shape", "peer contract (JWT -> AT)", peer_shape),
}

# What the in-process tools (bench.profile, bench.steps, bench.instructions) can drive:
# they send their pool more than once.
REPEATABLE = tuple(name for name, scenario in SCENARIOS.items() if not scenario.single_use)
