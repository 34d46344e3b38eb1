"""``sts revoke``: bulk revocation and offboarding, driven through the CLI against the
world's database (same fixed clock), observed over HTTP."""

from __future__ import annotations

import shlex
from datetime import timedelta
from typing import Any

import jwt as pyjwt
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select

from sts.cli import cli
from sts.db import admin
from sts.db.models import IssuedToken
from tests.conftest import TEST_PASSPHRASE
from tests.integration.world import CI_SUBJECT, DEPLOY, PROJECT, RULES, World, lineage_row


def sts(world: World, *args: str) -> Result:
    settings = world.app.extensions["sts"].settings
    env = {
        "STS_ISSUER": settings.issuer,
        "STS_DATABASE_URL": settings.effective_database_url,
        "STS_KEYS_DIR": str(settings.keys_dir),
        "STS_INSTANCE_DIR": str(settings.instance_dir),
        "STS_KEY_PASSPHRASE": TEST_PASSPHRASE,
    }
    return CliRunner().invoke(cli, list(args), env=env, obj={"clock": world.clock})


def claim(token: str, name: str) -> Any:
    return pyjwt.decode(token, options={"verify_signature": False})[name]


def operator_audit(world: World) -> list[dict[str, Any]]:
    return [row for row in world.audit_rows() if row["reason"].startswith("operator.")]


def test_offboarding_a_subject_revokes_its_chain_and_blocks_it(world: World) -> None:
    tokens = world.chain()

    result = sts(world, "revoke", "--subject", CI_SUBJECT, "--reason", "left the company")

    assert result.exit_code == 0, result.output
    assert "revoked 3 token(s)" in result.output
    assert [world.is_active(token) for token in tokens] == [False, False, False]
    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.subject"
    ahead, final = operator_audit(world)  # the pass ahead of the block, then the block
    assert ahead["reason"] == "operator.revoke.subject.ahead"
    assert "revoked 3 token(s) ahead of the block: left the company" in ahead["detail"]
    assert final["reason"] == "operator.revoke.subject"
    assert "revoked 3 token(s) (3 of them ahead of the block); blocked" in final["detail"]
    assert "left the company" in final["detail"]

    assert f"(lift: sts revoke --lift --subject {shlex.quote(CI_SUBJECT)})" in result.output
    lifted = sts(world, "revoke", "--lift", "--subject", CI_SUBJECT)
    assert lifted.exit_code == 0, lifted.output
    assert "lifted 1 block(s)" in lifted.output
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert not world.is_active(tokens[0])  # revoked stays revoked


def test_a_blocked_exchange_records_its_refusal_and_no_token(world: World) -> None:
    assert sts(world, "revoke", "--subject", CI_SUBJECT).exit_code == 0
    tokens_before = world.count(IssuedToken)

    refused = world.exchange(world.ci_token(), audience=DEPLOY)

    assert refused.status_code == 400
    assert "access_token" not in refused.json
    assert world.count(IssuedToken) == tokens_before
    last = world.audit_rows()[-1]
    assert (last["decision"], last["reason"], last["issued_jti"]) == (
        "deny",
        "blocked.subject",
        None,
    )


def test_offboarding_a_client(world: World) -> None:
    tokens = world.chain()  # root issued to ci-runner, the rest to workload
    agent = world.agent_exchange(world.agent_token(), audience=PROJECT).json["access_token"]

    result = sts(world, "revoke", "--client", "ci-runner")

    assert "revoked 3 token(s)" in result.output  # the descendants go with the root
    assert [world.is_active(token) for token in tokens] == [False, False, False]
    assert world.is_active(agent)
    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    assert refused.status_code == 400
    assert refused.json["error"] == "unauthorized_client"


def test_offboarding_a_credential(world: World) -> None:
    agent = world.agent_exchange(world.agent_token(), audience=PROJECT).json["access_token"]

    result = sts(world, "revoke", "--credential", "agent-key")

    assert "revoked 1 token(s)" in result.output
    assert not world.is_active(agent)
    assert world.agent_exchange(world.agent_token(), audience=PROJECT).status_code == 400
    assert sts(world, "revoke", "--lift", "--credential", "agent-key").exit_code == 0
    assert world.agent_exchange(world.agent_token(), audience=PROJECT).status_code == 200


def test_offboarding_an_actor(world: World) -> None:
    seven = world.agent_exchange(world.agent_token("agent-7"), audience=PROJECT)
    eight = world.agent_exchange(world.agent_token("agent-8"), audience=PROJECT)

    result = sts(world, "revoke", "--actor", "agent-7")

    assert "revoked 1 token(s)" in result.output
    assert not world.is_active(seven.json["access_token"])
    assert world.is_active(eight.json["access_token"])
    assert world.agent_exchange(world.agent_token("agent-7"), audience=PROJECT).status_code == 400
    assert world.agent_exchange(world.agent_token("agent-8"), audience=PROJECT).status_code == 200


def test_offboarding_an_issuer(world: World) -> None:
    tokens = world.chain()
    agent = world.agent_exchange(world.agent_token(), audience=PROJECT).json["access_token"]

    result = sts(world, "revoke", "--issuer", "ci")

    assert "revoked 3 token(s)" in result.output
    assert not any(world.is_active(token) for token in tokens)
    assert world.is_active(agent)
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 400


def test_revoking_by_rule_version(world: World) -> None:
    old = world.chain()
    old_version = claim(old[0], "sts_rule_version")
    world.put_rule("payments-prod-deploy", dict(RULES["payments-prod-deploy"]))  # new version
    new = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    assert claim(new, "sts_rule_version") != old_version

    result = sts(world, "revoke", "--rule", "payments-prod-deploy", "--version", str(old_version))

    assert result.exit_code == 0, result.output
    assert "revoked 3 token(s)" in result.output
    assert "blocked" not in result.output  # a rule is not an identity: nothing to block
    assert not any(world.is_active(token) for token in old)
    assert world.is_active(new)
    assert "revoked 1 token(s)" in sts(world, "revoke", "--rule", "payments-prod-deploy").output
    assert not world.is_active(new)


def test_revoking_the_tokens_of_a_removed_rule_by_its_id(world: World) -> None:
    """Its name no longer names its tokens once a rule is removed; its id, which they
    carry (``sts_rule_id``) and which no new rule takes, still does."""
    tokens = world.chain()
    first_rule = claim(tokens[0], "sts_rule_id")
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        admin.delete_rule(session, "payments-prod-deploy")
        session.commit()
    services.trust.invalidate()
    by_name = sts(world, "revoke", "--rule", "payments-prod-deploy")
    assert "no rule named 'payments-prod-deploy' (a removed rule: --rule-id)" in by_name.output

    result = sts(world, "revoke", "--rule-id", str(first_rule))
    assert result.exit_code == 0, result.output
    assert "revoked 3 token(s)" in result.output  # the first, and what was derived from it
    assert not any(world.is_active(token) for token in tokens)
    row = operator_audit(world)[-1]
    assert row["reason"] == "operator.revoke.rule_id"


def test_revoking_one_jti(world: World) -> None:
    tokens = world.chain()
    result = sts(world, "revoke", "--jti", claim(tokens[1], "jti"))
    assert "revoked 2 token(s)" in result.output
    assert [world.is_active(token) for token in tokens] == [True, False, False]


BAD_SELECTORS = [
    ((), "exactly one of"),
    (("--subject", "a", "--client", "b"), "exactly one of"),
    (("--subject", "a", "--version", "3"), "--version goes with --rule or --rule-id"),
    (("--rule-id", "x"), "'x' is not a valid integer"),
    (("--rule", "no-such-rule"), "no rule named 'no-such-rule'"),
    (("--credential", "no-such-key"), "no service credential named"),
    (("--issuer", "nobody"), "no trusted issuer named 'nobody'"),
    (("--client", "nobody"), "no client 'nobody'"),
    (("--lift", "--rule", "payments-prod-deploy"), "--lift applies to"),
    (("--lift", "--client", "nobody"), "no active block on client 'nobody' to lift"),
    (("--lift", "--subject", "never-blocked"), "no active block on subject 'never-blocked'"),
    (("--subject", ""), "--subject takes a non-empty value"),
    (("--client", " "), "--client takes a non-empty value"),
]


def test_revoke_refuses_bad_selectors(world: World) -> None:
    # One world for every case: each case is a refusal that must change nothing.
    for args, message in BAD_SELECTORS:
        result = sts(world, "revoke", *args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
    assert operator_audit(world) == []


# More than PostgreSQL's protocol can bind in one statement (65,535 parameters).
MANY = 70_000


def test_a_subject_holding_more_tokens_than_one_statement_can_name_is_revoked_whole(
    world: World,
) -> None:
    tokens = world.chain()
    table = IssuedToken.__table__
    engine = world.app.extensions["sts"].engine
    with engine.begin() as connection:
        first = connection.execute(
            select(table).where(table.c.jti == claim(tokens[0], "jti"))
        ).mappings()
        template = {**first.one(), "status_list_id": None, "status_idx": None}
        connection.execute(
            insert(table), [{**template, "jti": f"bulk-{i:06d}"} for i in range(MANY)]
        )

    result = sts(world, "revoke", "--subject", CI_SUBJECT)

    assert result.exit_code == 0, result.output
    assert f"revoked {MANY + 3} token(s)" in result.output
    assert [world.is_active(token) for token in tokens] == [False, False, False]
    live = select(func.count()).where(table.c.revoked_at.is_(None))
    with engine.connect() as connection:
        assert connection.execute(live).scalar_one() == 0


def test_the_walk_skips_expired_branches_and_still_reaches_every_live_token(
    world: World,
) -> None:
    """A revocation walks only what can still be live: a token never outlives what it was
    exchanged from (nor its actor token), so below an expired token every token is expired
    too. With an expired family of the subject on record beside a live chain, the live
    chain is revoked whole and the expired rows are left as they were."""
    tokens = world.chain()
    long_ago = world.clock() - timedelta(hours=2)
    expired = [
        lineage_row("old-root", long_ago, subject=CI_SUBJECT),
        lineage_row("old-child", long_ago, subject=CI_SUBJECT, parent_jti="old-root"),
        lineage_row("old-acted", long_ago, subject="someone", actor_parent_jti="old-root"),
    ]
    table = IssuedToken.__table__
    engine = world.app.extensions["sts"].engine
    with engine.begin() as connection:
        connection.execute(insert(table), expired)

    result = sts(world, "revoke", "--subject", CI_SUBJECT)

    assert result.exit_code == 0, result.output
    assert "revoked 3 token(s)" in result.output
    assert [world.is_active(token) for token in tokens] == [False, False, False]
    old = select(table.c.jti, table.c.revoked_at).where(table.c.jti.like("old-%"))
    with engine.connect() as connection:
        assert sorted(connection.execute(old).all()) == [
            ("old-acted", None),
            ("old-child", None),
            ("old-root", None),
        ]
