"""``sts revoke``: offboarding and bulk revocation; ``--lift`` re-enables an identity."""

from __future__ import annotations

import re
import shlex

import click

from sts.cli.common import current_clock, open_engine
from sts.db.engine import make_session_factory
from sts.db.locks import write_transaction
from sts.revocation import (
    SWEPT_AHEAD,
    UnknownTarget,
    lift_by_operator,
    revoke_by_operator,
    sweep_ahead,
)

THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")  # RFC 7638 §3: base64url of a SHA-256 hash
SELECTORS = (
    "jti",
    "subject",
    "client",
    "credential",
    "issuer",
    "rule",
    "rule_id",
    "actor",
    "upstream_token",
    "dpop_key",
)


@click.command("revoke")
@click.option("--jti", help="One token (and every token derived from it).")
@click.option("--subject", help="Every token of this subject; blocks the subject.")
@click.option("--client", help="Every token issued to this client; blocks the client.")
@click.option(
    "--credential", help="Service credential NAME: disabled; tokens of it or it acted in revoked."
)
@click.option(
    "--issuer", help="Trusted issuer NAME (or URL): tokens of its subjects and actors; blocked."
)
@click.option("--rule", help="Every live token minted under the rule NAME.")
@click.option(
    "--rule-id",
    type=int,
    help="Every live token minted under rule ID (its tokens' sts_rule_id), even a removed one.",
)
@click.option(
    "--version", "versions", type=int, multiple=True, help="With --rule or --rule-id: only these."
)
@click.option("--actor", help="Every token where this actor acted; blocks the actor.")
@click.option(
    "--upstream-token",
    help="An upstream JWT's jti (or sha256:<hex>): tokens minted from it; blocks it.",
)
@click.option(
    "--dpop-key",
    help="A DPoP key's RFC 7638 thumbprint (cnf.jkt): tokens bound to it; blocks its proofs.",
)
@click.option("--reason", default="revoked by an operator", show_default=True)
@click.option("--lift", is_flag=True, help="Lift the block on the identity instead.")
def revoke_command(
    jti: str | None,
    subject: str | None,
    client: str | None,
    credential: str | None,
    issuer: str | None,
    rule: str | None,
    rule_id: int | None,
    versions: tuple[int, ...],
    actor: str | None,
    upstream_token: str | None,
    dpop_key: str | None,
    reason: str,
    lift: bool,
) -> None:
    """Revoke live tokens and everything derived from them, and block the named identity
    from new exchanges until lifted. An identity's tokens are revoked in passes first
    (sts.revocation.sweep_ahead, an audit record each), so that the transaction which
    blocks it, which every exchange waits for, has little left to revoke (one record)."""
    given = {
        kind: value
        for kind, value in zip(
            SELECTORS,
            (
                jti,
                subject,
                client,
                credential,
                issuer,
                rule,
                None if rule_id is None else str(rule_id),
                actor,
                upstream_token,
                dpop_key,
            ),
            strict=True,
        )
        if value is not None
    }
    if len(given) != 1:
        options = ", ".join("--" + kind.replace("_", "-") for kind in SELECTORS)
        raise click.UsageError(f"name exactly one of {options}")
    ((kind, value),) = given.items()
    if not value.strip():
        # An empty name selects nothing a token carries, and a block on it keeps nothing out.
        raise click.UsageError(f"--{kind.replace('_', '-')} takes a non-empty value")
    if kind == "dpop_key" and not THUMBPRINT.fullmatch(value):
        raise click.UsageError(
            "--dpop-key takes the key's RFC 7638 SHA-256 thumbprint: 43 base64url "
            "characters, no padding (the tokens' cnf.jkt)"
        )
    if versions and kind not in ("rule", "rule_id"):
        raise click.UsageError("--version goes with --rule or --rule-id")
    now = current_clock()()
    with open_engine() as engine:
        session_factory = make_session_factory(engine)
        try:
            swept = None
            if not lift and kind in SWEPT_AHEAD:
                swept = sweep_ahead(session_factory, kind, value, reason=reason, now=now)
            with write_transaction(session_factory) as session:
                if lift:
                    outcome = lift_by_operator(session, kind, value, reason=reason, now=now)
                else:
                    outcome = revoke_by_operator(
                        session,
                        kind,
                        value,
                        versions=versions,
                        reason=reason,
                        now=now,
                        swept=swept,
                    )
        except UnknownTarget as exc:
            raise click.ClickException(str(exc)) from None
    if lift:
        click.echo(f"lifted {outcome.lifted} block(s) on {kind} {value!r}")
        return
    click.echo(f"revoked {outcome.revoked} token(s)")
    if outcome.blocked:
        option = f"--{kind.replace('_', '-')}"
        click.echo(
            f"{kind} {value!r} is blocked from new exchanges "
            f"(lift: sts revoke --lift {option} {shlex.quote(value)})"
        )


def register(cli: click.Group) -> None:
    cli.add_command(revoke_command)
