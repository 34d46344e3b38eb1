"""``sts db``: Alembic, wrapped. Applies the schema and this deployment's rules revisions."""

from __future__ import annotations

import click
from alembic.script import ScriptDirectory

from sts.cli.common import load_settings, open_engine
from sts.db.migrate import (
    alembic_config_for,
    current_revisions,
    downgrade,
    rules_undone_by_schema_downgrade,
    schema_is_at_head,
    upgrade,
)
from sts.rules.migration import RulesMigrationError, rules_head


@click.group("db")
def db_group() -> None:
    """Database migrations (Alembic): the schema branch and the rules branch."""


@db_group.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Upgrade the database to REVISION (default: every head, schema and rules)."""
    settings = load_settings()
    with open_engine(settings) as engine:
        config = alembic_config_for(settings, engine)
        try:
            # Two rules revisions written from the same head (two merged pull requests)
            # each put the full definitions their own plan started from: applied together,
            # the later one silently undoes the other's changes. Refuse before any step.
            rules_head(ScriptDirectory.from_config(config))
        except RulesMigrationError as exc:
            raise click.ClickException(f"{exc}; nothing was applied") from None
        upgrade(config, revision)
        click.echo(f"database at {', '.join(current_revisions(engine)) or 'base'}")


@db_group.command("downgrade")
@click.argument("revision")
@click.option(
    "--with-rules",
    is_flag=True,
    help="also roll back the rules revisions that depend on the schema revisions undone",
)
def db_downgrade(revision: str, with_rules: bool) -> None:
    """Downgrade the database to REVISION (e.g. rules@-1, schema@-1, or base).

    A schema downgrade that would also roll back rules revisions (those that depend on
    a schema revision it undoes, and every later one) is refused unless --with-rules:
    rolling a release back must not silently undo rules changes, such as a client
    disabled after a leak."""
    settings = load_settings()
    with open_engine(settings) as engine:
        config = alembic_config_for(settings, engine)
        dragged = rules_undone_by_schema_downgrade(config, engine, revision)
        if dragged and not with_rules:
            raise click.ClickException(
                f"downgrading to {revision} would also roll back {len(dragged)} rules "
                f"revision(s): {', '.join(dragged)} (they depend on a schema revision it "
                "undoes). Roll the rules back first (sts db downgrade rules@-N) and review "
                "what they change, or pass --with-rules."
            )
        downgrade(config, revision)
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
