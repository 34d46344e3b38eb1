"""``sts rules explain`` runs the exchange's verification and evaluator, issuing nothing."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import update

from sts.cli import cli
from sts.db.models import Client, Rule
from tests.conftest import TEST_ISSUER, TEST_PASSPHRASE
from tests.integration.world import CI_CLAIMS, DEPLOY, RULES, VAULT, World


@pytest.fixture
def env(world: World, app: Flask) -> dict[str, str]:
    settings = app.extensions["sts"].settings
    return {
        "STS_ISSUER": TEST_ISSUER,
        "STS_DATABASE_URL": settings.effective_database_url,
        "STS_KEYS_DIR": str(settings.keys_dir),
        "STS_INSTANCE_DIR": str(settings.instance_dir),
        "STS_KEY_PASSPHRASE": TEST_PASSPHRASE,
    }


def real_time_token(world: World, **overrides: object) -> str:
    """The CLI runs on the system clock; the world's own clock is fixed in the past."""
    claims = {**CI_CLAIMS, **overrides}
    return world.ci.mint(now=int(time.time()), **claims)


def explain(env: dict[str, str], token: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["rules", "explain", *args], input=token, env=env)


def test_explain_allow_names_the_rule(world: World, env: dict[str, str]) -> None:
    result = explain(env, real_time_token(world), "--client", "ci-runner", "--audience", DEPLOY)
    assert result.exit_code == 0, result.output
    assert "decision: allow by rule payments-prod-deploy" in result.output
    assert "  scopes: deploy:write" in result.output
    assert "  payments-prod-deploy: matched: grants the request" in result.output
    assert (
        "no-pull-request-deploys: subject.event_name: 'push' does not match equals 'pull_request'"
        in result.output
    )
    assert len(world.audit_rows()) == 0  # nothing recorded, nothing issued


def test_explain_deny_lists_each_failed_condition(world: World, env: dict[str, str]) -> None:
    result = explain(
        env,
        real_time_token(world, ref="refs/heads/dev"),
        "--client",
        "ci-runner",
        "--audience",
        DEPLOY,
    )
    assert result.exit_code == 1
    assert "decision: deny (invalid_request): no_matching_rule" in result.output
    assert (
        "payments-prod-deploy: subject.ref: 'refs/heads/dev' does not match "
        "equals 'refs/heads/main'" in result.output
    )
    assert "workload-narrowing: subject: from issuer 'ci', rule wants sts 'sts'" in result.output


def test_explain_says_an_invalid_deny_rule_denies_everything(
    world: World, env: dict[str, str]
) -> None:
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        session.execute(
            update(Rule)
            .where(Rule.name == "no-pull-request-deploys")
            .values(definition={**RULES["no-pull-request-deploys"], "description": 2024})
        )
        session.commit()
    result = explain(env, real_time_token(world), "--client", "ci-runner", "--audience", DEPLOY)
    assert result.exit_code == 1
    assert (
        "decision: deny (invalid_request) by rule no-pull-request-deploys: denied_by_rule\n"
        "  rule no-pull-request-deploys does not compile (description must be a string "
        "(quote it)): a deny rule, it denies every exchange until fixed\n" in result.output
    )


def test_explain_target_refusal(world: World, env: dict[str, str]) -> None:
    result = explain(env, real_time_token(world), "--client", "ci-runner", "--audience", VAULT)
    assert result.exit_code == 1
    assert "decision: deny (invalid_target)" in result.output


def test_explain_refused_token(world: World, env: dict[str, str]) -> None:
    result = explain(env, "garbage", "--client", "ci-runner")
    assert result.exit_code == 1
    assert "before any rule: The subject token is not a well-formed JWT." in result.output


def test_explain_says_when_the_rule_requires_a_dpop_proof(
    world: World, env: dict[str, str]
) -> None:
    from tests.integration.test_dpop import require_dpop

    token = real_time_token(world)
    before = explain(env, token, "--client", "ci-runner", "--audience", DEPLOY)
    assert "sender constraint" not in before.output
    require_dpop(world)
    after = explain(env, token, "--client", "ci-runner", "--audience", DEPLOY)
    assert after.exit_code == 0, after.output
    assert "  sender constraint: a DPoP proof is required (RFC 9449)" in after.output


def test_explain_says_when_the_client_must_use_dpop(world: World, env: dict[str, str]) -> None:
    from tests.integration.test_dpop_bound_client import bind_ci_runner

    token = real_time_token(world)
    bind_ci_runner(world)
    bound = explain(env, token, "--client", "ci-runner", "--audience", DEPLOY)
    assert bound.exit_code == 0, bound.output
    assert (
        "  sender constraint: a DPoP proof is required by the client's registration "
        "(dpop_bound_access_tokens, RFC 9449 §5.2)" in bound.output
    )
    bind_ci_runner(world, bound=False)
    unbound = explain(env, token, "--client", "ci-runner", "--audience", DEPLOY)
    assert "sender constraint" not in unbound.output


@pytest.mark.parametrize("client", ["disabled", "unknown"])
def test_explain_refuses_a_client_the_endpoint_would_refuse(
    world: World, env: dict[str, str], client: str
) -> None:
    """The token endpoint refuses a disabled or unknown client (invalid_client) before any
    rule; explain says so instead of naming the rule that would have allowed it."""
    client_id = "ci-runner" if client == "disabled" else "nobody"
    if client == "disabled":
        with world.app.extensions["sts"].session_factory.begin() as session:
            session.execute(
                update(Client).where(Client.client_id == client_id).values(disabled=True)
            )
    result = explain(env, real_time_token(world), "--client", client_id, "--audience", DEPLOY)
    assert result.exit_code == 1, result.output
    why = "is disabled" if client == "disabled" else "is not registered"
    assert f"decision: deny (invalid_client) before any rule: client '{client_id}' {why}" in (
        result.output
    )
    assert "payments-prod-deploy" not in result.output
