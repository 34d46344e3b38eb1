"""The exchanges the bench drives, as pools of pre-built HTTP requests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bench.loadgen import build_request, post_all
from bench.world import (
    AGENT_CLIENT,
    CI_CLIENT,
    DEPLOY,
    PEER_CLIENT,
    PEER_ORDERS,
    PROJECT,
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


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    build: Callable[[World, int], list[bytes]]


def _exchange(subject: str, subject_type: str, **params: str) -> list[tuple[str, str]]:
    return [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
        *params.items(),
    ]


def ci_deploy(world: World, port: int) -> list[bytes]:
    """1. external CI JWT -> deploy token, client_secret_basic."""
    return [
        build_request(
            port,
            TOKEN_PATH,
            _exchange(token, TOKEN_TYPE_JWT, audience=DEPLOY, scope="deploy:write"),
            CI_CLIENT,
        )
        for token in world.ci_tokens
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
    "agent-act": Scenario("agent-act", "2. API key + agent JWT -> act", agent_act),
    "re-exchange": Scenario("re-exchange", "3. sts token -> narrower", re_exchange),
    "peer-shape": Scenario("peer-shape", "peer contract (JWT -> AT)", peer_shape),
}
