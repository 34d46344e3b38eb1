"""A running service (`sts serve`, two workers) picks up a rules migration without a
restart, within the documented delay: STS_RULES_REFRESH_INTERVAL plus the time of one
request."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from click.testing import CliRunner

from sts.cli import cli
from sts.credentials import hash_secret
from sts.db.engine import make_engine
from sts.db.migrate import alembic_config, upgrade
from sts.protocol import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from tests.issuer import TestIssuer
from tests.server import running_server, service_env

REFRESH_INTERVAL = 1.0
MARGIN = 1.5  # one request's time and scheduling noise on a loaded CI machine
SECRET = "live-runner-secret-0123456789abcdef"
DEPLOY = "https://deploy.acme.internal"


def rules_document(issuer: TestIssuer, ref: str) -> dict[str, object]:
    return {
        "issuers": [
            {
                "name": "ci",
                "issuer": issuer.issuer,
                "jwks": issuer.public_jwks(),  # inline: no JWKS fetch in the timing
                "audiences": ["https://sts.test"],
                "algorithms": ["ES256"],
            }
        ],
        "clients": [
            {
                "client_id": "runner",
                "auth_method": "client_secret_basic",
                "secret_hash": hash_secret(SECRET),
            }
        ],
        "rules": [
            {
                "name": "deploy",
                "subject_token": {
                    "issuer": "ci",
                    "subject": "repo:acme/payments:environment:production",
                    "claims": {"repository": "acme/payments", "ref": ref},
                },
                "clients": ["runner"],
                "allow": {"audiences": [DEPLOY], "scopes": ["deploy:write"], "max_ttl": 300},
            }
        ],
    }


BASIC_AUTH = "Basic " + base64.b64encode(f"runner:{SECRET}".encode()).decode()


def exchange_body(subject_token: str) -> bytes:
    """The form of a deploy-token exchange (the client authenticates with BASIC_AUTH)."""
    return urlencode(
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": TOKEN_TYPE_JWT,
            "audience": DEPLOY,
        }
    ).encode()


def exchange(base: str, subject_token: str) -> tuple[int, str]:
    """(status, error code or "ok")."""
    request = urllib.request.Request(
        base + "/token", data=exchange_body(subject_token), method="POST"
    )
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Authorization", BASIC_AUTH)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            json.loads(response.read())
            return int(response.status), "ok"
    except urllib.error.HTTPError as exc:
        document = json.loads(exc.read())
        return int(exc.code), f"{document['error']}: {document.get('error_description')}"


def rules_service_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """A service whose rules are revisions under tmp_path."""
    return {
        **service_env(database_url, tmp_path, issuer="https://sts.test"),
        "STS_RULES_MIGRATIONS_DIR": str(tmp_path / "rules-revisions"),
    }


def apply_rules(env: dict[str, str], path: Path, document: dict[str, object], message: str) -> None:
    path.write_text(yaml.safe_dump(document))
    runner = CliRunner()
    for args in (["rules", "migration", str(path), "-m", message], ["db", "upgrade"]):
        result = runner.invoke(cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_a_running_service_sees_a_rules_change_within_the_interval(
    empty_database_url: str, tmp_path: Path
) -> None:
    env = {
        **rules_service_env(empty_database_url, tmp_path),
        "STS_RULES_REFRESH_INTERVAL": str(REFRESH_INTERVAL),
    }
    engine = make_engine(empty_database_url)
    upgrade(alembic_config(engine), "schema@head")
    engine.dispose()
    issuer = TestIssuer("https://ci.issuer.test")
    path = tmp_path / "rules.yaml"
    apply_rules(env, path, rules_document(issuer, "refs/heads/main"), "Deploys from main")
    token = issuer.mint(
        repository="acme/payments", ref="refs/heads/main", lifetime=300, aud="https://sts.test"
    )
    with running_server(env, workers=2) as base:
        # Both workers have loaded the rules (several requests spread over them).
        assert [exchange(base, token) for _ in range(6)] == [(200, "ok")] * 6

        apply_rules(env, path, rules_document(issuer, "refs/heads/release"), "Release only")
        changed_at = time.monotonic()
        while exchange(base, token) == (200, "ok"):
            assert time.monotonic() - changed_at < REFRESH_INTERVAL + MARGIN, "change not seen"
            time.sleep(0.05)
        flipped_after = time.monotonic() - changed_at
        # Every worker must have flipped by the deadline, not just the one that answered.
        time.sleep(max(0.0, REFRESH_INTERVAL + 0.2 - flipped_after))
        assert {exchange(base, token) for _ in range(10)} == {
            (400, "invalid_request: No rule allows this exchange.")
        }
    assert flipped_after < REFRESH_INTERVAL + MARGIN
