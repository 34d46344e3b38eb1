"""The CLI: check, db, keys, and serve (a real gunicorn on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sts.cli import cli
from tests.conftest import TEST_PASSPHRASE
from tests.server import get_json, running_server


@pytest.fixture
def env(empty_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "STS_ISSUER": "http://127.0.0.1:8080",
        "STS_DATABASE_URL": empty_database_url,
        "STS_KEYS_DIR": str(tmp_path / "keys"),
        "STS_INSTANCE_DIR": str(tmp_path / "instance"),
        "STS_KEY_PASSPHRASE": TEST_PASSPHRASE,
    }


def run(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_db_upgrade_current_downgrade(env: dict[str, str]) -> None:
    result = run(env, "db", "current")
    assert "current: base (empty)" in result.output
    assert "run `sts db upgrade`" in result.output
    result = run(env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "0001_baseline" in result.output
    assert "up to date" in run(env, "db", "current").output
    result = run(env, "db", "downgrade", "base")
    assert result.exit_code == 0
    assert "database at base" in result.output


def test_check_prints_configuration_without_secrets(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    result = run(env, "check")
    assert result.exit_code == 0, result.output
    assert "STS_ISSUER             http://127.0.0.1:8080" in result.output
    assert "STS_KEY_PASSPHRASE     <set>" in result.output
    assert TEST_PASSPHRASE not in result.output
    assert "configuration OK" in result.output


def test_check_refuses_old_schema(env: dict[str, str]) -> None:
    result = run(env, "check")
    assert result.exit_code == 1
    assert "run `sts db upgrade`" in result.output


def test_check_names_a_bad_variable(env: dict[str, str]) -> None:
    result = run({**env, "STS_ENV": "production", "STS_ISSUER": "http://sts.example.com"}, "check")
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == "Error: STS_ISSUER must use https in production (http is allowed only for loopback)"
    )


@pytest.mark.parametrize("server", ["gunicorn", "granian"])
def test_serve_answers_metadata_and_jwks(env: dict[str, str], server: str) -> None:
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    with running_server(env, args=("--server", server)) as base:
        status, document, _ = get_json(base + "/.well-known/oauth-authorization-server")
        assert status == 200
        assert document["issuer"] == "http://127.0.0.1:8080"
        status, jwks, headers = get_json(base + "/jwks.json")
        assert status == 200
        assert len(jwks["keys"]) == 1
        assert "max-age" in headers["Cache-Control"]
    keys = run(env, "keys", "list").output
    assert jwks["keys"][0]["kid"] in keys
    assert "active" in keys


@pytest.mark.parametrize("server", ["gunicorn", "granian"])
def test_serve_with_wrong_passphrase_exits_once_with_a_clear_message(
    env: dict[str, str], server: str
) -> None:
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    with running_server(env):
        pass  # first start: creates the key
    wrong = {**os.environ, **env, "STS_KEY_PASSPHRASE": "this is the wrong passphrase"}
    result = subprocess.run(
        [sys.executable, "-m", "sts", "serve", "--bind", "127.0.0.1:0", "--server", server],
        env=wrong,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "Error: STS_KEY_PASSPHRASE does not decrypt" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr + result.stdout  # no crash loop
    assert "Spawning worker" not in result.stderr + result.stdout  # granian's wording
