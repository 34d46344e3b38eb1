"""``sts check``: validate the configuration and print what sts would run with."""

from __future__ import annotations

import click

from sts.cli.common import load_settings, open_engine
from sts.db.migrate import alembic_config_for, schema_is_at_head


@click.command("check")
def check() -> None:
    """Validate settings, database and schema; print the effective configuration (no secrets)."""
    settings = load_settings()
    for name, value in settings.describe().items():
        click.echo(f"{name:<22} {value}")
    try:
        with open_engine(settings) as engine:
            at_head, head, current = schema_is_at_head(engine, alembic_config_for(settings, engine))
    except Exception as exc:
        raise click.ClickException(f"database unreachable: {type(exc).__name__}") from None
    if at_head:
        click.echo(f"schema                 at head ({head})")
    elif settings.should_auto_migrate:
        click.echo(f"schema                 will be upgraded to {head} on start")
    else:
        raise click.ClickException(
            f"database schema is at {', '.join(current) or 'base'}; run `sts db upgrade`"
        )
    click.echo("configuration OK")


def register(cli: click.Group) -> None:
    cli.add_command(check)
