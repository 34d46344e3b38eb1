"""A small world for exchange tests: issuers, clients, a credential and rules, seeded
through sts's own admin functions into the real database."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from sts.credentials import generate_api_key, hash_secret
from sts.db import admin
from sts.db.queries import ISSUED_TOKEN_FIELDS
from sts.protocol import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_API_KEY, TOKEN_TYPE_JWT
from tests.conftest import TEST_ISSUER, FixedClock
from tests.issuer import TestIssuer, sign_es256_raw

CI_SECRET = "ci-runner-secret-0123456789abcdef"
AGENT_SECRET = "agent-runtime-secret-0123456789abcdef"
RS_SECRET = "resource-server-secret-0123456789abcdef"
DEPLOY = "https://deploy.acme.internal"
VAULT = "https://vault.acme.internal"
PROJECT = "https://api.acme.internal/projects/alpha"
OTHER_PROJECT = "https://api.acme.internal/projects/beta"

CI_SUBJECT = "repo:acme/payments:environment:production"
CI_CLAIMS = {
    "repository": "acme/payments",
    "ref": "refs/heads/main",
    "environment": "production",
    "sha": "0f1e2d3c",
    "actor": "alice",
    "event_name": "push",
}

RULES: dict[str, dict[str, Any]] = {
    "payments-prod-deploy": {
        "subject_token": {
            "issuer": "ci",
            "subject": CI_SUBJECT,
            "claims": {
                "repository": "acme/payments",
                "ref": "refs/heads/main",
                "environment": ["production"],
            },
        },
        "clients": ["ci-runner"],
        "allow": {
            "audiences": [DEPLOY],
            "scopes": ["deploy:write", "deploy:read"],
            "default_scopes": ["deploy:write"],
            "max_ttl": 300,
            "copy_claims": ["repository", "sha"],
        },
    },
    "no-pull-request-deploys": {
        "effect": "deny",
        "subject_token": {"issuer": "ci", "claims": {"event_name": "pull_request"}},
    },
    "agent-one-project": {
        "subject_token": {"credential": "agent-key", "subject": "team-alpha-automation"},
        "clients": ["agent-runtime"],
        "actor": {"required": True, "issuer": "agents", "subject": {"glob": "agent-*"}},
        "allow": {"audiences": [PROJECT], "scopes": ["issues:write"], "max_ttl": 300},
    },
    "workload-narrowing": {
        "subject_token": {"sts": True},
        "clients": ["workload"],
        "allow": {
            "audiences": [DEPLOY, VAULT],
            "scopes": ["deploy:write", "deploy:read", "secrets:read"],
            "max_ttl": 600,
            "max_audiences": 2,
            "copy_claims": ["repository"],
        },
    },
}


@dataclass
class World:
    app: Flask
    client: FlaskClient
    clock: FixedClock
    ci: TestIssuer
    agents: TestIssuer
    api_key: str
    workload_key: ECKey
    extra: dict[str, Any] = field(default_factory=dict)

    def now(self) -> int:
        return int(self.clock().timestamp())

    def ci_token(self, **overrides: Any) -> str:
        claims = {**CI_CLAIMS, **overrides}
        return self.ci.mint(now=self.now(), **claims)

    def agent_token(self, sub: str = "agent-7", **overrides: Any) -> str:
        return self.agents.mint(sub=sub, now=self.now(), **overrides)

    def exchange(
        self,
        subject_token: str,
        subject_token_type: str = TOKEN_TYPE_JWT,
        *,
        auth: tuple[str, str] | None = ("ci-runner", CI_SECRET),
        form: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> TestResponse:
        body: list[tuple[str, str]] = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", subject_token_type),
        ]
        body += list(params.items()) + (form or [])
        all_headers = dict(headers or {})
        if auth is not None:
            raw = f"{auth[0]}:{auth[1]}".encode()
            all_headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return self.client.post(
            "/token",
            data=urlencode(body),
            content_type="application/x-www-form-urlencoded",
            headers=all_headers,
        )

    def agent_exchange(self, actor_token: str | None = None, **params: str) -> TestResponse:
        extra: dict[str, str] = dict(params)
        if actor_token is not None:
            extra.setdefault("actor_token", actor_token)
            extra.setdefault("actor_token_type", TOKEN_TYPE_JWT)
        return self.exchange(
            self.api_key,
            TOKEN_TYPE_API_KEY,
            auth=None,
            form=[("client_id", "agent-runtime"), ("client_secret", AGENT_SECRET)],
            **extra,
        )

    def workload_assertion(
        self, raw: bool = False, header: dict[str, Any] | None = None, **overrides: Any
    ) -> str:
        """The workload's client assertion (RFC 7523): ``overrides`` over its claims,
        ``header`` over its JWS header (signed raw, as joserfc may refuse to encode it)."""
        now = self.now()
        claims = {
            "iss": "workload",
            "sub": "workload",
            "aud": TEST_ISSUER + "/token",
            "iat": now,
            "exp": now + 60,
            "jti": overrides.pop("jti", None) or uuid.uuid4().hex,
            **overrides,
        }
        jws_header = {"alg": "ES256", "kid": self.workload_key.thumbprint(), **(header or {})}
        if raw or header:  # what joserfc cannot encode (sign_es256_raw)
            return sign_es256_raw(self.workload_key, jws_header, claims)
        return jwt.encode(jws_header, claims, self.workload_key, algorithms=["ES256"])

    def workload_exchange(
        self, subject_token: str, headers: dict[str, str] | None = None, **params: str
    ) -> TestResponse:
        from sts.grants.client_auth import JWT_BEARER_ASSERTION
        from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN

        return self.exchange(
            subject_token,
            TOKEN_TYPE_ACCESS_TOKEN,
            auth=None,
            form=[
                ("client_assertion_type", JWT_BEARER_ASSERTION),
                ("client_assertion", self.workload_assertion()),
            ],
            headers=headers,
            **params,
        )

    def token_request(
        self,
        path: str,
        token: str,
        *,
        auth: tuple[str, str] | None,
        form: list[tuple[str, str]] | None = None,
        **params: str,
    ) -> TestResponse:
        body: list[tuple[str, str]] = [("token", token), *params.items(), *(form or [])]
        headers = {}
        if auth is not None:
            raw = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return self.client.post(
            path,
            data=urlencode(body),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
        )

    def revoke(
        self,
        token: str,
        auth: tuple[str, str] | None = ("ci-runner", CI_SECRET),
        form: list[tuple[str, str]] | None = None,
        **params: str,
    ) -> TestResponse:
        """RFC 7009 revocation (by default as ci-runner)."""
        return self.token_request("/revoke", token, auth=auth, form=form, **params)

    def introspect(
        self,
        token: str,
        auth: tuple[str, str] | None = ("resource-server", RS_SECRET),
        form: list[tuple[str, str]] | None = None,
        **params: str,
    ) -> TestResponse:
        """RFC 7662 introspection (by default as the registered resource server)."""
        return self.token_request("/introspect", token, auth=auth, form=form, **params)

    def introspect_authorization(self) -> str:
        raw = f"resource-server:{RS_SECRET}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def is_active(self, token: str) -> bool:
        response = self.introspect(token)
        assert response.status_code == 200, response.json
        return bool(response.json["active"])  # type: ignore[index]

    def chain(self) -> list[str]:
        """external CI JWT -> sts token -> re-exchange -> re-exchange: the three sts tokens."""
        first = self.exchange(self.ci_token(), audience=DEPLOY)
        assert first.status_code == 200, first.json
        tokens = [first.json["access_token"]]  # type: ignore[index]
        for _ in range(2):
            again = self.workload_exchange(tokens[-1], audience=DEPLOY, scope="deploy:write")
            assert again.status_code == 200, again.json
            tokens.append(again.json["access_token"])  # type: ignore[index]
        return tokens

    def put_rule(self, name: str, definition: dict[str, Any]) -> None:
        services = self.app.extensions["sts"]
        with services.session_factory() as session:
            admin.put_rule(session, name, definition, self.clock())
            session.commit()
        services.trust.invalidate()

    def count(self, model: type[Any]) -> int:
        """Rows of ``model`` on record."""
        from sqlalchemy import func, select

        with self.app.extensions["sts"].session_factory() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def audit_rows(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from sts.db.models import AuditRecord

        services = self.app.extensions["sts"]
        with services.session_factory() as session:
            rows = session.scalars(select(AuditRecord).order_by(AuditRecord.id)).all()
            return [
                {c.name: getattr(row, c.name) for c in AuditRecord.__table__.columns}
                for row in rows
            ]


def lineage_row(jti: str, issued_at: datetime, **values: Any) -> dict[str, Any]:
    """An ``issued_tokens`` row as the exchange records it (every column the exchange's
    insert binds, ``queries.ISSUED_TOKEN_FIELDS``): ``values`` over neutral defaults, so a
    test names only what it is about and a new column needs no edit here."""
    row: dict[str, Any] = dict.fromkeys(ISSUED_TOKEN_FIELDS)
    row.update(
        jti=jti,
        subject="repo:acme/app",
        subject_issuer="https://ci.example",
        subject_token_id="upstream-jti",
        client_id="ci-runner",
        rule_id=1,
        rule_version=1,
        audience=[DEPLOY],
        scope="deploy:write",
        kid="kid-1",
        issued_at=issued_at,
        expires_at=issued_at + timedelta(minutes=5),
    )
    row.update(values)
    return row


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (the tests check signatures where that is the point)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def put_ci_runner(session: Session, now: datetime, *, dpop_bound: bool = False) -> None:
    """The CI runner's client registration (``dpop_bound``: RFC 9449 §5.2's
    ``dpop_bound_access_tokens``)."""
    admin.put_client(
        session,
        client_id="ci-runner",
        auth_method="client_secret_basic",
        secret_hash=hash_secret(CI_SECRET),
        dpop_bound_access_tokens=dpop_bound,
        now=now,
    )


def seed_world(app: Flask, clock: FixedClock, ci: TestIssuer, agents: TestIssuer) -> World:
    services = app.extensions["sts"]
    now = clock()
    api_key = generate_api_key()
    workload_key = ECKey.generate_key("P-256")
    workload_jwk = workload_key.as_dict(private=False)
    workload_jwk.update({"kid": workload_key.thumbprint(), "alg": "ES256", "use": "sig"})
    assert ci.jwks_url is not None
    with services.session_factory() as session:
        admin.put_issuer(
            session,
            name="ci",
            issuer=ci.issuer,
            jwks_uri=ci.jwks_url,
            algorithms=["ES256"],
            audiences=[TEST_ISSUER],
            now=now,
        )
        admin.put_issuer(
            session,
            name="agents",
            issuer=agents.issuer,
            jwks=agents.public_jwks(),
            algorithms=["ES256"],
            audiences=[TEST_ISSUER],
            now=now,
        )
        put_ci_runner(session, now)
        admin.put_client(
            session,
            client_id="agent-runtime",
            auth_method="client_secret_post",
            secret_hash=hash_secret(AGENT_SECRET),
            now=now,
        )
        admin.put_client(
            session,
            client_id="workload",
            auth_method="private_key_jwt",
            jwks={"keys": [workload_jwk]},
            now=now,
        )
        admin.put_client(
            session,
            client_id="resource-server",
            auth_method="client_secret_basic",
            secret_hash=hash_secret(RS_SECRET),
            is_resource_server=True,
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
    services.trust.invalidate()
    return World(app, app.test_client(), clock, ci, agents, api_key.key, workload_key)


@pytest.fixture
def world(app: Flask, clock: FixedClock) -> Iterator[World]:
    ci = TestIssuer("https://ci.issuer.test")
    agents = TestIssuer("https://agents.issuer.test")
    with ci.serve():
        yield seed_world(app, clock, ci, agents)
