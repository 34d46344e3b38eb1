"""The CLI: check, db, keys, and serve (a real gunicorn on 127.0.0.1)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from sqlalchemy import update

from sts.cli import cli
from sts.cli.check import COLUMN, line
from sts.db import admin
from sts.db.models import Rule
from sts.errors import StartupError
from sts.keys.keystore import FileKeyStore
from tests.conftest import TEST_ISSUER, TEST_PASSPHRASE
from tests.integration.world import RULES, World
from tests.server import get_json, running_server, server_process, service_env, worker_pids


def run(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_db_upgrade_current_downgrade(env: dict[str, str]) -> None:
    result = run(env, "db", "current")
    assert "current: base (empty)" in result.output
    assert "run `sts db upgrade`" in result.output
    result = run(env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("database at 0")  # the schema head, whichever it is
    assert "up to date" in run(env, "db", "current").output
    result = run(env, "db", "downgrade", "base")
    assert result.exit_code == 0
    assert "database at base" in result.output


def test_a_schema_downgrade_does_not_silently_roll_back_rules(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Rolling a release's schema back would also roll back the rules revisions that
    depend on the schema revisions it undoes (here the one that bound a client to DPoP
    with schema 0010's column, and the later one that disabled a client after a leak):
    refused, naming them, unless --with-rules. Rolling rules back alone needs no flag."""
    from tests.migrations.test_schema_migrations import write_rules_revisions

    fields = {"auth_method": "client_secret_basic", "secret_hash": "h"}
    (tmp_path / "rules").mkdir()
    write_rules_revisions(
        tmp_path / "rules",
        [
            ("r1", "0009_dpop_proofs", fields),
            ("r2", "0010_client_dpop_bound", {**fields, "dpop_bound_access_tokens": True}),
            ("r3", None, {**fields, "disabled": True}),
        ],
    )
    env = {**env, "STS_RULES_MIGRATIONS_DIR": str(tmp_path / "rules")}
    assert run(env, "db", "upgrade").exit_code == 0

    # Below 0010 (schema@-1 while 0010 was the head).
    refused = CliRunner().invoke(cli, ["db", "downgrade", "0009_dpop_proofs"], env=env)
    assert refused.exit_code == 1
    assert "would also roll back 2 rules revision(s): r3, r2" in refused.output
    assert "current: r3" in run(env, "db", "current").output  # nothing was rolled back

    # The rules branch at r2; the schema head, which r2 does not depend on, named beside it
    # (in either order).
    rules_rolled = run(env, "db", "downgrade", "rules@-1").output
    assert rules_rolled.startswith("database at ")
    heads = rules_rolled.removeprefix("database at ").rstrip("\n").split(", ")
    assert sorted(heads) == ["0011_client_introspects", "r2"]
    rolled = run(env, "db", "downgrade", "0009_dpop_proofs", "--with-rules")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.output == "database at r1\n"


def test_check_prints_configuration_without_secrets(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    result = run(env, "check")
    assert result.exit_code == 0, result.output
    assert line("STS_ISSUER", "http://127.0.0.1:8080") in result.output
    assert line("STS_KEY_PASSPHRASE", "<set>") in result.output
    assert TEST_PASSPHRASE not in result.output
    assert "configuration OK" in result.output


def test_check_aligns_every_setting_and_names_a_generated_passphrase(
    env: dict[str, str],
) -> None:
    """Every name fits the column (values start at one place), and without
    STS_KEY_PASSPHRASE outside production the generated development passphrase's file is
    named, not just "<unset>"."""
    run(env, "db", "upgrade")
    unset: dict[str, str | None] = {**env, "STS_KEY_PASSPHRASE": None}
    result = CliRunner().invoke(cli, ["check"], env=unset, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    settings = [out for out in result.output.splitlines() if out.startswith("STS_")]
    assert len(settings) >= 40
    assert all(out[COLUMN - 1] == " " and out[COLUMN] != " " for out in settings)
    instance = env["STS_INSTANCE_DIR"]
    expected = f"<unset: a generated development one, {instance}/key-passphrase>"
    assert line("STS_KEY_PASSPHRASE", expected) in result.output


def test_check_names_stored_rules_and_key_sets_that_do_not_load(
    world: World, tmp_path: Path
) -> None:
    """sts serves on without them (each fails closed for its own part), so only `sts
    check` and /readyz tell the operator: check fails until they are fixed."""
    services = world.app.extensions["sts"]
    env = service_env(services.settings.effective_database_url, tmp_path, TEST_ISSUER)
    assert run(env, "check").output.endswith(
        f"{line('rules', 'ok')}\n{line('key sets', 'ok')}\nconfiguration OK\n"
    )
    with services.session_factory() as session:
        session.execute(
            update(Rule)
            .where(Rule.name == "no-pull-request-deploys")
            .values(definition={**RULES["no-pull-request-deploys"], "description": 2024})
        )
        admin.put_client(
            session,
            client_id="workload",
            auth_method="private_key_jwt",
            jwks={"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]},
            now=world.clock(),
        )
        session.commit()
    result = run(env, "check")
    assert result.exit_code == 1
    assert line("rules", "invalid: no-pull-request-deploys") + "\n" in result.output
    assert line("key sets", "invalid: client workload") + "\n" in result.output
    assert re.search(
        r"\n  rule no-pull-request-deploys \(version \d+\): description must be a string "
        r"\(quote it\); a deny rule: it denies every exchange until fixed\n",
        result.output,
    )
    assert "  client workload: jwks does not import: ValueError: " in result.output
    assert "Error: stored rules or key sets are invalid: fix them" in result.output
    assert "configuration OK" not in result.output


def test_check_fails_when_the_active_signing_key_does_not_open(
    world: World, tmp_path: Path
) -> None:
    """`sts check` validates the configuration before a deploy: a passphrase (or KEK) that
    does not open the active signing key stops `sts serve`, so check must not say OK."""
    services = world.app.extensions["sts"]
    env = service_env(services.settings.effective_database_url, tmp_path, TEST_ISSUER)
    kid = services.keyring.signing_key().kid
    ok = run(env, "check")
    assert ok.exit_code == 0, ok.output
    assert line("signing key", f"ok ({kid})") + "\n" in ok.output

    wrong = {**env, "STS_KEY_PASSPHRASE": "not the passphrase of these keys"}
    result = CliRunner().invoke(cli, ["check"], env=wrong)
    assert result.exit_code == 1
    assert line("signing key", "unavailable: STS_KEY_PASSPHRASE does not decrypt") in (
        result.output
    )
    assert "Error: the active signing key cannot be loaded" in result.output
    assert "configuration OK" not in result.output


def test_a_startup_error_is_one_line_not_a_traceback(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a directory without migrations/ (the image's `sts` outside /app, say), the
    db and rules commands raised StartupError as a traceback, and `sts check` called the
    database unreachable: each now says what is wrong on one line, exit code 1."""
    message = "cannot find the migrations/ folder (run sts from the repository root)"

    def missing() -> Path:
        raise StartupError(message)

    monkeypatch.setattr("sts.db.migrate.migrations_dir", missing)
    for args in (["db", "current"], ["db", "upgrade"], ["rules", "export"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert (result.exit_code, result.output) == (1, f"Error: {message}\n"), args
    check = CliRunner().invoke(cli, ["check"], env=env)
    assert check.exit_code == 1
    assert check.output.endswith(f"Error: {message}\n")


def test_an_unknown_revision_is_one_line_not_a_traceback(env: dict[str, str]) -> None:
    """A typo in `sts db upgrade|downgrade REV` raised Alembic's CommandError as a
    traceback; it is an operator's mistake, said on one line, exit code 1."""
    assert run(env, "db", "upgrade").exit_code == 0
    for args in (["db", "upgrade", "nosuchrev"], ["db", "downgrade", "nosuchrev"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 1, args
        expected = "Error: Can't locate revision identified by 'nosuchrev'\n"
        assert result.output == expected, result.output


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
def test_serve_replaces_a_worker_that_dies(env: dict[str, str], server: str) -> None:
    """A worker killed (OOM killer, a crash in native code) is replaced and the service
    keeps answering; the main process stays up."""
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    with server_process(env, args=("--server", server)) as (base, process):
        deadline = time.monotonic() + 20
        while len(before := worker_pids(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # ready as soon as one worker answers; wait for both
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = worker_pids(process.pid)
            if victim not in after and len(after) == 2:
                break
            time.sleep(0.1)
        assert victim not in after and len(after) == 2, (before, after)
        assert process.poll() is None
        for _ in range(6):  # both workers answer (connections are spread over them)
            assert get_json(base + "/readyz")[0] == 200


def test_serve_defaults_to_granian_with_keep_alive(env: dict[str, str]) -> None:
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    with server_process(env) as (base, process):
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        for _ in range(3):  # one connection, kept alive (RFC 9112 §9.3)
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Connection", "").lower() != "close"
            response.read()
        socket_before = connection.sock
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        assert connection.sock is socket_before  # not reopened
        connection.close()
        assert process.stdout is not None
        started = os.read(process.stdout.fileno(), 1 << 16).decode()  # already written
    assert "with 2 granian workers" in started, started
    migrate = Path("/proc/sys/net/ipv4/tcp_migrate_req")  # Linux >= 5.14
    if migrate.exists():  # advised exactly when a dying worker's queued connections are reset
        off = migrate.read_text().strip() == "0"
        assert ("net.ipv4.tcp_migrate_req is 0" in started) == off, started


def test_serve_under_gunicorn_closes_every_connection(env: dict[str, str]) -> None:
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    with running_server(env, args=("--server", "gunicorn")) as base:
        status, _, headers = get_json(base + "/healthz")
    assert status == 200
    assert headers.get("Connection") == "close"  # sync workers: no keep-alive


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


def kid_in(output: str, prefix: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(prefix)]
    return line.removeprefix(prefix).split()[0]


def test_keys_rotate_is_idempotent_and_listed(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    first = run(env, "keys", "rotate")
    assert first.exit_code == 0, first.output
    kid = kid_in(first.output, "published ")
    assert first.output.strip() == f"published {kid} (ES256) as pending"
    second = run(env, "keys", "rotate")
    assert second.exit_code == 0
    assert second.output.startswith("nothing due; next check due at ")
    listing = run(env, "keys", "list").output.splitlines()
    assert listing[0].split() == [
        "kid",
        "alg",
        "state",
        "created",
        "activated",
        "retired",
        "tokens",
    ]
    assert listing[1].split()[:3] == [kid, "ES256", "pending"]
    assert listing[1].split()[-3:] == ["-", "-", "0"]


def test_keys_compromised_and_retire(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    leaked = kid_in(run(env, "keys", "rotate").output, "published ")
    result = run(env, "keys", "compromised", leaked)
    assert result.exit_code == 0, result.output
    assert f"{leaked} marked compromised and removed from the JWKS" in result.output
    fresh = kid_in(result.output, "new signing key ")
    assert "0 issued tokens revoked; revocation of kind 'key' recorded" in result.output
    again = run(env, "keys", "compromised", leaked)
    assert again.exit_code == 1
    assert f"Error: signing key {leaked} is already marked compromised" in again.output

    refused = run(env, "keys", "retire", fresh)
    assert refused.exit_code == 1
    assert f"Error: cannot retire the active key {fresh} yet: its successor" in refused.output
    states = {
        line.split()[0]: line.split()[2]
        for line in run(env, "keys", "list").output.splitlines()[1:]
    }
    assert states[leaked] == "compromised"
    assert states[fresh] == "active"
    assert sorted(states.values()) == ["active", "compromised", "pending"]
    unknown = run(env, "keys", "retire", "-no-such-kid")  # kids may begin with "-"
    assert (unknown.exit_code, unknown.output.strip()) == (1, "Error: no signing key -no-such-kid")


def test_keys_rewrap_reads_the_new_secret_from_env_or_stdin(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    kid = kid_in(run(env, "keys", "rotate").output, "published ")
    first_new = "first new passphrase, long enough"
    result = run({**env, "STS_NEW_KEY_PASSPHRASE": first_new}, "keys", "rewrap")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("re-encrypted 1 keys into the file keystore (0 already done)")
    assert first_new not in result.output

    second_new = "second new passphrase, from stdin"
    result = CliRunner().invoke(
        cli,
        ["keys", "rewrap"],
        env={**env, "STS_KEY_PASSPHRASE": first_new},
        input=second_new + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1 keys" in result.output
    assert second_new not in result.output
    path = Path(env["STS_KEYS_DIR"]) / f"{kid}.pem"
    assert FileKeyStore(path.parent, second_new).load(kid, None) is not None

    wrong = run({**env, "STS_NEW_KEY_PASSPHRASE": "yet another passphrase"}, "keys", "rewrap")
    assert wrong.exit_code == 1
    assert wrong.output.startswith("Error: STS_KEY_PASSPHRASE does not decrypt")
    assert "Spawning worker" not in result.stderr + result.stdout  # granian's wording


def test_keys_rewrap_under_the_same_passphrase_converts_old_key_files(
    env: dict[str, str],
) -> None:
    """A key file from before scrypt (PKCS#8 PBES2, PBKDF2 with 2048 rounds) is rewritten
    in the scrypt format, under the passphrase already in use."""
    run(env, "db", "upgrade")
    kid = kid_in(run(env, "keys", "rotate").output, "published ")
    path = Path(env["STS_KEYS_DIR"]) / f"{kid}.pem"
    private_key = FileKeyStore(path.parent, TEST_PASSPHRASE).load(kid, None)
    path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(TEST_PASSPHRASE.encode()),
        )
    )
    result = run({**env, "STS_NEW_KEY_PASSPHRASE": TEST_PASSPHRASE}, "keys", "rewrap")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "re-encrypted 1 keys into the file keystore (0 already done)",
        "same passphrase as before (key files converted): nothing to change",
    ]
    assert path.read_bytes().startswith(b"-----BEGIN STS ENCRYPTED PRIVATE KEY-----")
    assert path.stat().st_mode & 0o777 == 0o600
    assert FileKeyStore(path.parent, TEST_PASSPHRASE).load(kid, None) is not None
    again = run({**env, "STS_NEW_KEY_PASSPHRASE": TEST_PASSPHRASE}, "keys", "rewrap")
    assert again.output.startswith("re-encrypted 0 keys into the file keystore (1 already done)")
