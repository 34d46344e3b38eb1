"""Rules administered as migrations, end to end on both backends: plan → migration →
``sts db upgrade`` → exchange; a narrowing revision refuses it; a downgrade allows it again
with a higher rule version; export round trip; drift; two revisions in sequence."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result

from sts.cli import cli
from sts.credentials import generate_api_key, hash_secret
from sts.db import admin
from sts.db.migrate import migrations_dir
from tests.conftest import TEST_PASSPHRASE
from tests.integration.world import CI_SECRET, DEPLOY, PROJECT, World

RULE = "payments-prod-deploy"

# The schema branch's head, read from the migrations folder (it moves as the schema grows).
SCHEMA_HEAD = ScriptDirectory(
    str(migrations_dir()), version_locations=[str(migrations_dir() / "versions" / "schema")]
).get_current_head()


@pytest.fixture
def env(world: World, tmp_path: Path) -> dict[str, str]:
    settings = world.app.extensions["sts"].settings
    return {
        "STS_ISSUER": settings.issuer,
        "STS_DATABASE_URL": settings.effective_database_url,
        "STS_KEYS_DIR": str(tmp_path / "keys"),
        "STS_KEY_PASSPHRASE": TEST_PASSPHRASE,
        # Generated revisions go to a throw-away directory, never into the repository.
        "STS_RULES_MIGRATIONS_DIR": str(tmp_path / "rules-revisions"),
    }


def sts(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def write(tmp_path: Path, name: str, document: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def rule_entry(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in document["rules"] if r["name"] == name)


def exchange_version(world: World) -> int | None:
    """The rule version in the issued token, or None when the exchange is refused."""
    world.app.extensions["sts"].trust.invalidate()  # the CLI changed the database
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    if response.status_code != 200:
        return None
    claims = jwt.decode(response.json["access_token"], options={"verify_signature": False})
    assert claims["sts_rule_id"] and claims["sts_rule_version"]
    return int(claims["sts_rule_version"])


def test_export_round_trip(world: World, env: dict[str, str], tmp_path: Path) -> None:
    exported = sts(env, "rules", "export")
    assert exported.exit_code == 0, exported.output
    path = tmp_path / "exported.yaml"
    path.write_text(exported.output)
    plan = sts(env, "rules", "plan", str(path))
    assert plan.exit_code == 0, plan.output
    assert plan.output == "No changes: the database matches the rules file.\n"
    assert sts(env, "rules", "check", str(path)).exit_code == 0
    written = tmp_path / "written.yaml"
    assert sts(env, "rules", "export", "-o", str(written)).output == f"wrote {written}\n"
    assert written.read_text() == exported.output
    document = yaml.safe_load(exported.output)
    assert {i["name"] for i in document["issuers"]} == {"ci", "agents"}
    assert all(c.get("secret_hash", "sha256:").startswith("sha256:") for c in document["clients"])


def test_export_to_a_path_it_cannot_write_is_an_error_not_a_traceback(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "rules.yaml"
    result = CliRunner().invoke(cli, ["rules", "export", "-o", str(missing)], env=env)
    assert result.exit_code == 1
    assert result.output == f"Error: cannot write {missing}: No such file or directory\n"


def test_plan_migrate_upgrade_narrow_and_roll_back(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    document = yaml.safe_load(sts(env, "rules", "export").output)
    # Start from a database without the rule: the first revision adds it.
    with world.app.extensions["sts"].session_factory() as session:
        admin.delete_rule(session, RULE)
        session.commit()
    assert exchange_version(world) is None

    wide = write(tmp_path, "wide.yaml", document)
    plan = sts(env, "rules", "plan", wide)
    assert plan.output.startswith(f"+ rule {RULE}\n")
    assert '    subject_token.claims.ref: "refs/heads/main"\n' in plan.output
    assert plan.output.endswith("Plan: 1 to add, 0 to change, 0 to remove.\n")

    first = sts(env, "rules", "migration", wide, "-m", "Allow payments production deploys")
    assert first.exit_code == 0, first.output
    revisions = sorted((tmp_path / "rules-revisions").glob("*.py"))
    assert len(revisions) == 1
    first_text = revisions[0].read_text()
    assert "branch_labels: str | Sequence[str] | None = ('rules',)" in first_text
    assert f"depends_on: str | Sequence[str] | None = '{SCHEMA_HEAD}'" in first_text
    assert "from sts.rules import ops" in first_text
    assert "sts.db.models" not in first_text
    assert sts(env, "rules", "check", wide).exit_code == 1  # written, not applied yet

    upgraded = sts(env, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    # The schema check (start-up, `sts check`) still sees the schema at head beside the rules.
    assert f"schema head: {SCHEMA_HEAD} (up to date)" in sts(env, "db", "current").output
    assert sts(env, "check").exit_code == 0
    added_version = exchange_version(world)
    assert added_version is not None
    assert sts(env, "rules", "check", wide).exit_code == 0

    # A second revision in sequence narrows the rule: only the release branch may deploy.
    narrow_document = copy.deepcopy(document)
    rule_entry(narrow_document, RULE)["subject_token"]["claims"]["ref"] = "refs/heads/release"
    narrow = write(tmp_path, "narrow.yaml", narrow_document)
    plan = sts(env, "rules", "plan", narrow)
    assert plan.output == (
        f"~ rule {RULE}\n"
        '    subject_token.claims.ref: "refs/heads/main" -> "refs/heads/release"\n'
        "\n"
        "Plan: 0 to add, 1 to change, 0 to remove.\n"
    )
    second = sts(env, "rules", "migration", narrow, "-m", "Deploy from release only")
    assert second.exit_code == 0, second.output
    revisions = sorted((tmp_path / "rules-revisions").glob("*.py"))
    assert len(revisions) == 2
    assert [p.name[:5] for p in revisions] == ["0001_", "0002_"]
    first_id = revisions[0].name.split("_")[1]
    assert f"down_revision: str | Sequence[str] | None = {first_id!r}" in revisions[1].read_text()
    # Only the first depends on the schema: a later one that writes no column a newer
    # schema added must not be rolled back with a schema downgrade.
    assert "depends_on: str | Sequence[str] | None = None" in revisions[1].read_text()
    assert sts(env, "db", "upgrade").exit_code == 0
    assert exchange_version(world) is None  # narrowed: refused

    # Roll back the narrowing: allowed again, under a NEW, higher version.
    rolled_back = sts(env, "db", "downgrade", "rules@-1")
    assert rolled_back.exit_code == 0, rolled_back.output
    restored_version = exchange_version(world)
    assert restored_version is not None
    assert restored_version > added_version + 1  # the narrowing took added_version + 1
    assert sts(env, "rules", "check", wide).exit_code == 0  # the previous state, exactly

    # Upgrading again re-applies the narrowing with yet another version.
    assert sts(env, "db", "upgrade").exit_code == 0
    assert exchange_version(world) is None
    assert sts(env, "rules", "check", narrow).exit_code == 0


def test_migration_needs_the_database_at_the_rules_head(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    document = yaml.safe_load(sts(env, "rules", "export").output)
    rule_entry(document, RULE)["allow"]["max_ttl"] = 120
    path = write(tmp_path, "rules.yaml", document)
    assert sts(env, "rules", "migration", path, "-m", "shorter").exit_code == 0
    rule_entry(document, RULE)["allow"]["max_ttl"] = 60
    path = write(tmp_path, "rules.yaml", document)
    result = sts(env, "rules", "migration", path, "-m", "shorter still")
    assert result.exit_code == 1
    assert "is not at the rules head" in result.output
    assert "run `sts db upgrade` first" in result.output


def test_migration_refuses_when_nothing_changes(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "same.yaml"
    path.write_text(sts(env, "rules", "export").output)
    result = sts(env, "rules", "migration", str(path), "-m", "nothing")
    assert result.exit_code == 1
    assert "no changes: the database already matches the rules file" in result.output
    assert not (tmp_path / "rules-revisions").exists()


def test_drift_is_detected(world: World, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(sts(env, "rules", "export").output)
    assert sts(env, "rules", "check", str(path)).output == f"in sync: the database matches {path}\n"
    # Someone changes a rule by hand, outside any reviewed migration.
    world.put_rule("no-pull-request-deploys", {"effect": "deny", "subject_token": {"issuer": "ci"}})
    result = CliRunner().invoke(cli, ["rules", "check", str(path)], env=env)
    assert result.exit_code == 1
    assert result.stderr == f"drift: the database differs from {path}\n"
    assert result.stdout == (
        "~ rule no-pull-request-deploys\n"
        '    subject_token.claims.event_name: (absent) -> "pull_request"\n'
        "\n"
        "Plan: 0 to add, 1 to change, 0 to remove.\n"
    )


def test_invalid_file_lists_every_problem(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    document = yaml.safe_load(sts(env, "rules", "export").output)
    rule_entry(document, RULE)["allow"]["max_ttl"] = 7200
    rule_entry(document, RULE)["clients"] = ["nobody"]
    path = write(tmp_path, "bad.yaml", document)
    result = sts(env, "rules", "plan", path)
    assert result.exit_code == 1
    assert f"Error: {path}: 2 problems\n" in result.output
    assert "allow.max_ttl 7200 is above the global cap STS_MAX_TOKEN_TTL=900" in result.output
    assert "clients: no client 'nobody' in this file" in result.output


def test_a_key_set_that_does_not_import_is_refused_before_it_is_applied(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    """Stored, a client's key off its curve made every exchange fail (the whole trust
    configuration would not load): `sts rules plan` imports every key set, as sts will."""
    off_curve = {"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}
    document = yaml.safe_load(sts(env, "rules", "export").output)
    next(c for c in document["clients"] if c["client_id"] == "workload")["jwks"] = off_curve
    next(i for i in document["issuers"] if i["name"] == "agents")["jwks"] = off_curve
    path = write(tmp_path, "bad-keys.yaml", document)
    result = sts(env, "rules", "plan", path)
    assert result.exit_code == 1
    assert f"Error: {path}: 2 problems\n" in result.output
    not_on_curve = "does not import: ValueError: Invalid EC key. Point is not on the curve"
    assert f"issuer 'agents': jwks.keys[0] {not_on_curve}" in result.output
    assert f"client 'workload': jwks.keys[0] {not_on_curve}" in result.output


def test_every_kind_is_restored_exactly_by_a_downgrade(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    before = yaml.safe_load(sts(env, "rules", "export").output)
    before_path = write(tmp_path, "before.yaml", before)
    after = copy.deepcopy(before)
    issuer = next(i for i in after["issuers"] if i["name"] == "agents")
    issuer["audiences"] = ["https://sts.test", "https://sts.other.test"]
    runner = next(c for c in after["clients"] if c["client_id"] == "ci-runner")
    runner["secret_hash"] = hash_secret("a-rotated-ci-runner-secret-0123456789")
    after["clients"] = [c for c in after["clients"] if c["client_id"] != "workload"]
    after["rules"] = [r for r in after["rules"] if r["name"] != "workload-narrowing"]
    new_key = generate_api_key()
    after["credentials"].append(
        {
            "name": "second-key",
            "key_id": new_key.key_id,
            "secret_hash": new_key.secret_hash,
            "owner_subject": "team-beta",
            "disabled": True,
        }
    )
    after_path = write(tmp_path, "after.yaml", after)
    plan = sts(env, "rules", "plan", after_path).output
    assert plan.splitlines()[:4] == [
        "~ issuer agents",
        '    audiences: ["https://sts.test"] -> ["https://sts.test", "https://sts.other.test"]',
        "~ client ci-runner",
        f'    secret_hash: "{hash_secret(CI_SECRET)}" -> "{runner["secret_hash"]}"',
    ]
    assert "- client workload\n" in plan
    assert "+ credential second-key\n" in plan
    assert "- rule workload-narrowing\n" in plan
    assert plan.endswith("Plan: 1 to add, 2 to change, 2 to remove.\n")

    assert sts(env, "rules", "migration", after_path, "-m", "Every kind").exit_code == 0
    assert sts(env, "db", "upgrade").exit_code == 0
    assert sts(env, "rules", "check", after_path).exit_code == 0
    assert sts(env, "db", "downgrade", "rules@-1").exit_code == 0
    check = sts(env, "rules", "check", before_path)
    assert check.exit_code == 0, check.output


def test_renaming_an_issuer_keeps_its_url_and_rolls_back(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    before = yaml.safe_load(sts(env, "rules", "export").output)
    after = copy.deepcopy(before)
    next(i for i in after["issuers"] if i["name"] == "agents")["name"] = "agent-runtime"
    rule_entry(after, "agent-one-project")["actor"]["issuer"] = "agent-runtime"
    path = write(tmp_path, "renamed.yaml", after)
    assert sts(env, "rules", "migration", path, "-m", "Rename the agents issuer").exit_code == 0
    upgraded = sts(env, "db", "upgrade")  # the issuer URL is unique: delete before put
    assert upgraded.exit_code == 0, upgraded.output
    assert sts(env, "rules", "check", path).exit_code == 0
    assert sts(env, "db", "downgrade", "rules@-1").exit_code == 0
    assert sts(env, "rules", "check", write(tmp_path, "before.yaml", before)).exit_code == 0


def test_a_client_bound_to_dpop_by_a_rules_revision(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    """``dpop_bound_access_tokens: true`` on a client (RFC 9449 §5.2), through plan,
    migration and ``sts db upgrade``: its bearer requests are refused from then on, and
    the revision's downgrade admits them again."""
    before = yaml.safe_load(sts(env, "rules", "export").output)
    assert all("dpop_bound_access_tokens" not in c for c in before["clients"])  # the default
    after = copy.deepcopy(before)
    runner = next(c for c in after["clients"] if c["client_id"] == "ci-runner")
    runner["dpop_bound_access_tokens"] = True
    after_path = write(tmp_path, "bound.yaml", after)
    plan = sts(env, "rules", "plan", after_path).output
    assert plan.splitlines()[:2] == [
        "~ client ci-runner",
        "    dpop_bound_access_tokens: (absent) -> true",
    ]

    assert sts(env, "rules", "migration", after_path, "-m", "Bind ci-runner").exit_code == 0
    (revision,) = (tmp_path / "rules-revisions").glob("*.py")
    # It writes a column schema 0010 added: a fresh upgrade applies it after that (the
    # first rules revision: it depends on the schema head, 0010 or a later one).
    assert f"depends_on: str | Sequence[str] | None = {SCHEMA_HEAD!r}" in revision.read_text()
    assert sts(env, "db", "upgrade").exit_code == 0
    assert sts(env, "rules", "check", after_path).exit_code == 0
    assert rule_entry_client(sts(env, "rules", "export").output)["dpop_bound_access_tokens"]
    assert exchange_version(world) is None
    assert world.audit_rows()[-1]["reason"] == "client.dpop_required"

    assert sts(env, "db", "downgrade", "rules@-1").exit_code == 0
    assert "dpop_bound_access_tokens" not in rule_entry_client(sts(env, "rules", "export").output)
    assert exchange_version(world) is not None


def rule_entry_client(exported: str, client_id: str = "ci-runner") -> dict[str, Any]:
    return next(c for c in yaml.safe_load(exported)["clients"] if c["client_id"] == client_id)


def test_a_resource_server_limited_to_its_audiences_by_a_rules_revision(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    """``introspects`` on a resource server (RFC 7662 §2.2), through plan, migration (a
    later rules revision, which depends on schema 0011 that added the column) and ``sts db
    upgrade``: a token for another audience is inactive to it from then on, and the
    revision's downgrade lets it see every token again."""
    before = yaml.safe_load(sts(env, "rules", "export").output)
    assert all("introspects" not in c for c in before["clients"])  # the default
    described = copy.deepcopy(before)
    rule_entry(described, RULE)["description"] = "payments deploys from main"
    first = write(tmp_path, "described.yaml", described)
    assert sts(env, "rules", "migration", first, "-m", "Describe the rule").exit_code == 0
    assert sts(env, "db", "upgrade").exit_code == 0

    after = copy.deepcopy(described)
    server = next(c for c in after["clients"] if c["client_id"] == "resource-server")
    server["introspects"] = [DEPLOY]
    after_path = write(tmp_path, "served.yaml", after)
    plan = sts(env, "rules", "plan", after_path).output
    assert plan.splitlines()[:2] == [
        "~ client resource-server",
        f'    introspects: (absent) -> ["{DEPLOY}"]',
    ]
    assert sts(env, "rules", "migration", after_path, "-m", "Serve deploys").exit_code == 0
    second = sorted((tmp_path / "rules-revisions").glob("*.py"))[1].read_text()
    assert "depends_on: str | Sequence[str] | None = '0011_client_introspects'" in second
    assert f"'introspects': ['{DEPLOY}']" in second
    assert sts(env, "db", "upgrade").exit_code == 0
    assert sts(env, "rules", "check", after_path).exit_code == 0
    exported = rule_entry_client(sts(env, "rules", "export").output, "resource-server")
    assert exported["introspects"] == [DEPLOY]

    world.app.extensions["sts"].trust.invalidate()  # the CLI changed the database
    deploy = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    project = world.agent_exchange(world.agent_token(), audience=PROJECT).json["access_token"]
    assert world.introspect(deploy).json["active"] is True
    assert world.introspect(project).json == {"active": False}

    assert sts(env, "db", "downgrade", "rules@-1").exit_code == 0
    exported = rule_entry_client(sts(env, "rules", "export").output, "resource-server")
    assert "introspects" not in exported
    assert sts(env, "rules", "check", first).exit_code == 0
    world.app.extensions["sts"].trust.invalidate()
    assert world.introspect(project).json["active"] is True


def test_upgrade_refuses_a_forked_rules_branch(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    """Two revisions written from the same rules head (two pull requests, both merged)
    each put the full definition their own plan started from: applied together, the later
    one silently undid the other's change (here, put back the branch a narrowing removed),
    whatever either plan showed. `sts db upgrade` refuses and applies nothing."""
    document = yaml.safe_load(sts(env, "rules", "export").output)
    rule_entry(document, RULE)["allow"]["max_ttl"] = 120
    base = write(tmp_path, "base.yaml", document)
    assert sts(env, "rules", "migration", base, "-m", "Base").exit_code == 0
    assert sts(env, "db", "upgrade").exit_code == 0
    base_version = exchange_version(world)
    assert base_version is not None

    narrowed = copy.deepcopy(document)
    rule_entry(narrowed, RULE)["subject_token"]["claims"]["ref"] = "refs/heads/release"
    assert (
        sts(env, "rules", "migration", write(tmp_path, "a.yaml", narrowed), "-m", "A").exit_code
        == 0
    )
    revisions = tmp_path / "rules-revisions"
    (narrowing,) = [p for p in revisions.glob("0002_*.py")]
    aside = tmp_path / narrowing.name
    narrowing.rename(aside)  # the other pull request's branch does not have it
    shorter = copy.deepcopy(document)
    rule_entry(shorter, RULE)["allow"]["max_ttl"] = 60
    assert (
        sts(env, "rules", "migration", write(tmp_path, "b.yaml", shorter), "-m", "B").exit_code == 0
    )
    aside.rename(revisions / ("0003_" + narrowing.name[5:]))  # both merged

    result = sts(env, "db", "upgrade")
    assert result.exit_code == 1, result.output
    assert "the rules branch has several heads" in result.output
    assert sts(env, "rules", "check", base).exit_code == 0  # nothing was applied
    assert exchange_version(world) == base_version


def test_a_yaml_date_in_a_key_set_is_a_problem_not_a_traceback(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    """A JWK member that YAML reads as a date passed validation; `sts rules plan` then
    failed with a traceback (json), and a revision would hold a literal of a date."""
    document = yaml.safe_load(sts(env, "rules", "export").output)
    issuer = next(i for i in document["issuers"] if i["name"] == "agents")
    issuer["jwks"]["keys"][0]["extra"] = datetime.date(2026, 1, 1)  # dumped unquoted
    path = write(tmp_path, "dated.yaml", document)
    for command in ("plan", "migration"):
        result = sts(env, "rules", command, path, *(["-m", "m"] if command == "migration" else []))
        assert result.exit_code == 1
        assert "issuer 'agents': jwks.keys[0].extra is a YAML date, not a JSON value" in (
            result.output
        )
    assert not (tmp_path / "rules-revisions").exists()
