"""``sts exposure``: everything minted from a leaked upstream token, then revoked."""

from __future__ import annotations

from click.testing import CliRunner

from sts.cli import cli
from tests.integration.test_offboarding import claim, sts
from tests.integration.world import DEPLOY, World


def test_exposure_lists_and_revokes_what_a_leaked_token_was_exchanged_for(world: World) -> None:
    leaked = world.ci_token()
    first = world.exchange(leaked, audience=DEPLOY).json["access_token"]
    second = world.workload_exchange(first, audience=DEPLOY).json["access_token"]
    unrelated = world.chain()[0]

    settings = world.app.extensions["sts"].settings
    env = {"STS_ISSUER": settings.issuer, "STS_DATABASE_URL": settings.effective_database_url}
    report = CliRunner().invoke(
        cli, ["exposure", "--token-stdin"], input=leaked, env=env, obj={"clock": world.clock}
    )
    assert report.exit_code == 0, report.output
    assert "2 token(s) derived from" in report.output
    assert claim(first, "jti") in report.output and claim(second, "jti") in report.output
    assert leaked not in report.output  # the leaked token itself is never printed
    assert world.is_active(first)

    revoked = sts(world, "exposure", "--token-id", claim(leaked, "jti"), "--revoke")
    assert "revoked 2 token(s)" in revoked.output
    assert not world.is_active(first) and not world.is_active(second)
    assert world.is_active(unrelated)
    assert sts(world, "exposure").exit_code != 0  # exactly one of --token-id, --token-stdin
