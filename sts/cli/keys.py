"""``sts keys``: inspect signing keys."""

from __future__ import annotations

import click

from sts.cli.common import open_engine
from sts.db import queries
from sts.db.engine import make_session_factory


@click.group("keys")
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("list")
def keys_list() -> None:
    """List signing keys: kid, algorithm, state, timestamps."""
    with open_engine() as engine, make_session_factory(engine)() as session:
        rows = queries.all_signing_keys(session)
    click.echo(f"{'kid':<44} {'alg':<6} {'state':<11} {'created':<20} {'activated':<20}")
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        activated = row.activated_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.activated_at else "-"
        click.echo(f"{row.kid:<44} {row.alg:<6} {row.state:<11} {created:<20} {activated:<20}")


def register(cli: click.Group) -> None:
    cli.add_command(keys_group)
