"""``sts exposure``: what was minted from a leaked upstream token, and revoke it all."""

from __future__ import annotations

import sys

import click

from sts.cli.common import current_clock, open_engine
from sts.db import queries
from sts.db.engine import make_session_factory
from sts.db.locks import write_transaction
from sts.revocation import record_revocation, revoke_upstream_token
from sts.tokens.exposure import upstream_token_names


@click.command("exposure")
@click.option("--token-id", help="The upstream token's jti (or sha256:<hex> fingerprint).")
@click.option(
    "--token-stdin",
    is_flag=True,
    help="Read the leaked token itself from stdin (kept out of shell history and logs).",
)
@click.option(
    "--revoke",
    is_flag=True,
    help="Also revoke every live token listed, and block the upstream token from new exchanges.",
)
def exposure_command(token_id: str | None, token_stdin: bool, revoke: bool) -> None:
    """List every sts token minted from an upstream token, presented as the subject or the
    actor token (and their descendants): jti, parent, client, audience, scope, expiry and
    state."""
    if (token_id is None) == (not token_stdin):
        raise click.UsageError("give exactly one of --token-id or --token-stdin")
    subject = issuer = None
    if token_id is None:
        token_id, subject, issuer = upstream_token_names(sys.stdin.read().strip())
    now = current_clock()()
    with open_engine() as engine, write_transaction(make_session_factory(engine)) as session:
        # Its sub narrows the lookup to an index: read from the token itself, else from a
        # token exchanged from it (a scan, here, before any lock).
        roots = queries.find_upstream_token_roots(session, token_id, subject, issuer)
        if revoke:
            # Before the listing: the block and the governance lock it takes first make
            # the list complete (an exchange in flight with the token is waited for).
            revoked = revoke_upstream_token(session, token_id, roots, "exposed upstream token", now)
            record_revocation(
                session,
                now=now,
                reason="operator.revoke.exposure",
                detail=f"upstream token {token_id}: revoked {revoked} token(s); blocked",
                token_id=token_id,
                decision="info",
            )
        rows = queries.lineage_tokens(session, roots)
    click.echo(f"{len(rows)} token(s) derived from {token_id}")
    for row in rows:
        state = (
            "revoked"
            if row.revoked_at is not None
            else ("expired" if row.expires_at <= now else "live")
        )
        expires = row.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(
            f"{row.jti} parent={row.parent_jti or '-'} client={row.client_id or '-'} "
            f"aud={','.join(row.audience)} scope={row.scope or '-'} exp={expires} {state}"
        )
    if revoke:
        click.echo(f"revoked {revoked} token(s)")
        click.echo(
            f"upstream token {token_id} is blocked from new exchanges "
            "(lift: sts revoke --lift --upstream-token ID)"
        )


def register(cli: click.Group) -> None:
    cli.add_command(exposure_command)
