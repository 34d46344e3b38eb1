"""The benchmark's world: a throw-away database seeded through ``sts.db.admin``, keys,
trusted issuers with inline JWKS (no HTTP issuer), clients, a service credential, rules,
and pools of pre-minted subject and actor tokens.

Everything here is written for the bench; nothing is imported from ``tests/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sts.credentials import generate_api_key, hash_secret
from sts.db import admin
from sts.settings import Settings

STS_ISSUER = "https://sts.bench.test"
PASSPHRASE = "bench passphrase, not a secret"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# BENCH ONLY: how long after its iat the bench's server accepts a DPoP proof (sts's
# default: 60 s). A run's proofs are all made before it starts (scenario ci-deploy-dpop
# pre-builds its requests), then come a quiet wait, the warmup and the measured seconds:
# a proof sent at the end must still be fresh, or it would count as an error.
DPOP_PROOF_MAX_AGE = 900

CI_ISSUER = "https://ci.bench.test"
AGENTS_ISSUER = "https://agents.bench.test"
DEPLOY = "https://deploy.acme.internal"
VAULT = "https://vault.acme.internal"
PROJECT = "https://api.acme.internal/projects/alpha"
CI_SUBJECT = "repo:acme/payments:environment:production"
CI_CLAIMS = {
    "repository": "acme/payments",
    "ref": "refs/heads/main",
    "environment": "production",
    "sha": "0f1e2d3c",
    "actor": "alice",
    "event_name": "push",
}

# The peers' contract (common/policy.json in the peers folder).
PEER_ISSUER = "https://upstream-idp.peer.test"
PEER_AUDIENCE = "https://sts.peer.test"
PEER_CLIENT = ("bench-client", "bench-secret-8f3a0c4e9d2b7a61")
PEER_ORDERS = "https://api.peer.test/orders"
PEER_PAYMENTS = "https://api.peer.test/payments"

CI_CLIENT = ("ci-runner", "ci-runner-secret-0123456789abcdef")
AGENT_CLIENT = ("agent-runtime", "agent-runtime-secret-0123456789abcdef")
WORKLOAD_CLIENT = ("workload", "workload-secret-0123456789abcdef")

RULES: dict[str, dict[str, Any]] = {
    "ci-deploy": {
        "subject_token": {
            "issuer": "ci",
            "subject": CI_SUBJECT,
            "claims": {
                "repository": "acme/payments",
                "ref": "refs/heads/main",
                "environment": ["production"],
            },
        },
        "clients": [CI_CLIENT[0]],
        "allow": {
            "audiences": [DEPLOY, VAULT],
            "scopes": ["deploy:write", "deploy:read", "secrets:read"],
            "default_scopes": ["deploy:write"],
            "max_ttl": 3600,
            "max_audiences": 2,
            "copy_claims": ["repository", "sha"],
        },
    },
    "no-pull-request-deploys": {
        "effect": "deny",
        "subject_token": {"issuer": "ci", "claims": {"event_name": "pull_request"}},
    },
    "agent-one-project": {
        "subject_token": {"credential": "agent-key", "subject": "team-alpha-automation"},
        "clients": [AGENT_CLIENT[0]],
        "actor": {"required": True, "issuer": "agents", "subject": {"glob": "agent-*"}},
        "allow": {"audiences": [PROJECT], "scopes": ["issues:write"], "max_ttl": 300},
    },
    "workload-narrowing": {
        "subject_token": {"sts": True},
        "clients": [WORKLOAD_CLIENT[0]],
        "allow": {
            "audiences": [DEPLOY, VAULT],
            "scopes": ["deploy:write", "deploy:read", "secrets:read"],
            "max_ttl": 600,
            "max_audiences": 2,
            "copy_claims": ["repository"],
        },
    },
    # The peers' policy: sub ^user-..., one audience, scopes a subset of that audience's.
    "peer-orders": {
        "subject_token": {"issuer": "upstream", "subject": {"glob": "user-*"}},
        "clients": [PEER_CLIENT[0]],
        "allow": {
            "audiences": [PEER_ORDERS],
            "scopes": ["orders:read", "orders:write"],
            "max_ttl": 300,
            "max_audiences": 1,
        },
    },
    "peer-payments": {
        "subject_token": {"issuer": "upstream", "subject": {"glob": "user-*"}},
        "clients": [PEER_CLIENT[0]],
        "allow": {
            "audiences": [PEER_PAYMENTS],
            "scopes": ["payments:read"],
            "max_ttl": 300,
            "max_audiences": 1,
        },
    },
}


class Issuer:
    """A trusted issuer for the bench: its own ES256 key, JWKS served inline."""

    def __init__(self, issuer: str, key: ECKey | None = None) -> None:
        self.issuer = issuer
        self.key = key or ECKey.generate_key("P-256")
        self.kid = self.key.kid or self.key.thumbprint()

    def public_jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        public.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        return {"keys": [public]}

    def mint(self, sub: str, aud: str, lifetime: int, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        header = {"alg": "ES256", "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, payload, self.key, algorithms=["ES256"])


@dataclass
class PeerTokens:
    """The peers' upstream issuer: their public JWKS and tokens from their minting script
    when the peers folder is present; otherwise a key of our own in the same shape."""

    jwks: dict[str, Any]
    tokens: list[str]
    source: str


def peer_tokens(peers_dir: Path | None, count: int, lifetime: int = 7200) -> PeerTokens:
    if peers_dir is not None and (peers_dir / "common/mint_subject_token.py").exists():
        script = peers_dir / "common/mint_subject_token.py"
        output = subprocess.run(
            [
                sys.executable,
                str(script),
                "--sub",
                "user",
                "--count",
                str(count),
                "--ttl",
                str(lifetime),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        jwks = json.loads((peers_dir / "common/keys/upstream_public.jwks.json").read_text())
        tokens = [line.strip() for line in output.splitlines() if line.strip()]
        return PeerTokens(jwks, tokens, f"{script} (the peers' key)")
    upstream = Issuer(PEER_ISSUER)
    tokens = [upstream.mint(f"user-{i}", PEER_AUDIENCE, lifetime) for i in range(count)]
    return PeerTokens(upstream.public_jwks(), tokens, "bench key (peers folder not found)")


@dataclass
class World:
    """A seeded database plus what the load needs to address it."""

    database: str  # "sqlite" | "postgresql"
    env: dict[str, str]  # STS_* for the server processes
    ci_tokens: list[str]
    agent_tokens: list[str]
    api_key: str
    peer: PeerTokens
    upstream_jwks_path: Path
    sts_tokens: list[str] = field(default_factory=list)  # pre-minted through a server
    # Requests a single-use scenario (a DPoP proof each) builds; sized from the run by
    # ``bench.scenarios.single_use_pool`` (0: not sized, and such a scenario refuses).
    proof_pool: int = 0


def settings_env(workdir: Path, database_url: str) -> dict[str, str]:
    return {
        "STS_ISSUER": STS_ISSUER,
        "STS_DATABASE_URL": database_url,
        "STS_KEYS_DIR": str(workdir / "keys"),
        "STS_INSTANCE_DIR": str(workdir / "instance"),
        "STS_KEY_PASSPHRASE": PASSPHRASE,
        "STS_AUTO_MIGRATE": "true",
        "STS_MAX_TOKEN_TTL": "3600",
        "STS_LOG_LEVEL": "WARNING",
        "STS_DPOP_PROOF_MAX_AGE": str(DPOP_PROOF_MAX_AGE),  # bench only: see its definition
    }


@contextmanager
def database_url(kind: str, workdir: Path, postgres_admin_url: str) -> Iterator[str]:
    """A throw-away database: a SQLite file in ``workdir``, or a PostgreSQL database
    created for this run and dropped afterwards (even on failure)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'sts.db'}"
        return
    name = f"sts_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    engine = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(postgres_admin_url).set(database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def seed(
    kind: str, workdir: Path, url: str, pool: int, peer: PeerTokens, token_lifetime: int = 7200
) -> World:
    """Migrate, create the signing key and seed the trust configuration (in process, through
    sts's own admin functions), then mint the token pools."""
    from sts.app import build_services

    env = settings_env(workdir, url)
    settings = Settings.from_env(env)
    services = build_services(settings)
    ci, agents = Issuer(CI_ISSUER), Issuer(AGENTS_ISSUER)
    api_key = generate_api_key()
    now = datetime.now(UTC)
    try:
        with services.session_factory() as session:
            for name, issuer, jwks in (
                ("ci", CI_ISSUER, ci.public_jwks()),
                ("agents", AGENTS_ISSUER, agents.public_jwks()),
            ):
                admin.put_issuer(
                    session,
                    name=name,
                    issuer=issuer,
                    jwks=jwks,
                    algorithms=["ES256"],
                    audiences=[STS_ISSUER],
                    now=now,
                )
            admin.put_issuer(
                session,
                name="upstream",
                issuer=PEER_ISSUER,
                jwks=peer.jwks,
                algorithms=["ES256"],
                audiences=[PEER_AUDIENCE],
                now=now,
            )
            for (client_id, secret), method in (
                (CI_CLIENT, "client_secret_basic"),
                (AGENT_CLIENT, "client_secret_post"),
                (WORKLOAD_CLIENT, "client_secret_basic"),
                (PEER_CLIENT, "client_secret_basic"),
            ):
                admin.put_client(
                    session,
                    client_id=client_id,
                    auth_method=method,
                    secret_hash=hash_secret(secret),
                    now=now,
                )
            admin.put_credential(
                session,
                name="agent-key",
                key_id=api_key.key_id,
                secret_hash=api_key.secret_hash,
                owner_subject="team-alpha-automation",
                now=now,
            )
            for name, definition in RULES.items():
                admin.put_rule(session, name, definition, now)
            session.commit()
    finally:
        services.engine.dispose()
    upstream_jwks_path = workdir / "upstream_public.jwks.json"
    upstream_jwks_path.write_text(json.dumps(peer.jwks))
    return World(
        database=kind,
        env=env,
        ci_tokens=[
            ci.mint(CI_SUBJECT, STS_ISSUER, token_lifetime, **CI_CLAIMS) for _ in range(pool)
        ],
        agent_tokens=[agents.mint(f"agent-{i}", STS_ISSUER, token_lifetime) for i in range(pool)],
        api_key=api_key.key,
        peer=peer,
        upstream_jwks_path=upstream_jwks_path,
    )
