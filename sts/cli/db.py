"""``sts db``: Alembic, wrapped. Applies the schema and this deployment's rules revisions."""

from __future__ import annotations

import click

from sts.cli.common import load_settings, open_engine
from sts.db.migrate import (
    alembic_config_for,
    current_revisions,
    downgrade,
    schema_is_at_head,
    upgrade,
)


@click.group("db")
def db_group() -> None:
    """Database migrations (Alembic): the schema branch and the rules branch."""


@db_group.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Upgrade the database to REVISION (default: every head, schema and rules)."""
    settings = load_settings()
    with open_engine(settings) as engine:
        upgrade(alembic_config_for(settings, engine), revision)
        click.echo(f"database at {', '.join(current_revisions(engine)) or 'base'}")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the database to REVISION (e.g. rules@-1, schema@-1, or base)."""
    settings = load_settings()
    with open_engine(settings) as engine:
        downgrade(alembic_config_for(settings, engine), revision)
        click.echo(f"database at {', '.join(current_revisions(engine)) or 'base'}")


@db_group.command("current")
def db_current() -> None:
    """Print the database's current revisions and whether the schema is at head."""
    settings = load_settings()
    with open_engine(settings) as engine:
        at_head, head, current = schema_is_at_head(engine, alembic_config_for(settings, engine))
    click.echo(f"current: {', '.join(current) or 'base (empty)'}")
    click.echo(f"schema head: {head} ({'up to date' if at_head else 'run `sts db upgrade`'})")


def register(cli: click.Group) -> None:
    cli.add_command(db_group)
