"""``sts check``: validate the configuration and print what sts would run with."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from sts.cli.common import load_settings, open_engine
from sts.db import queries
from sts.db.migrate import alembic_config_for, schema_is_at_head
from sts.db.models import SigningKey
from sts.errors import StartupError
from sts.keys.keystore import development_passphrase_file
from sts.keys.lifecycle import load_current
from sts.settings import Settings
from sts.trust import TrustConfig, load_trust_config


@click.command("check")
def check() -> None:
    """Validate settings, database, schema and the stored trust configuration; print the
    effective configuration (no secrets)."""
    settings = load_settings()
    generated = development_passphrase_file(settings) if settings.keystore == "file" else None
    for name, value in settings.describe().items():
        if name == "STS_KEY_PASSPHRASE" and generated is not None:
            value = f"<unset: a generated development one, {generated}>"
        click.echo(line(name, value))
    trust: TrustConfig | None = None
    active: SigningKey | None = None
    try:
        with open_engine(settings) as engine:
            at_head, head, current = schema_is_at_head(engine, alembic_config_for(settings, engine))
            if at_head:
                with Session(engine, expire_on_commit=False) as session:
                    trust = load_trust_config(session)
                    active = queries.active_signing_key(session)
    except StartupError as exc:  # not the database: e.g. no migrations/ folder here
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"database unreachable: {type(exc).__name__}") from None
    if at_head:
        click.echo(line("schema", f"at head ({head})"))
    elif settings.should_auto_migrate:
        click.echo(line("schema", f"will be upgraded to {head} on start"))
    else:
        raise click.ClickException(
            f"database schema is at {', '.join(current) or 'base'}; run `sts db upgrade`"
        )
    if at_head and not _report_signing_key(settings, active):
        # `sts serve` would refuse to start (or, running, answer 503 to every exchange).
        raise click.ClickException("the active signing key cannot be loaded: fix its secret")
    if trust is not None and not _report_trust(trust):
        # sts serves on (each part fails closed), but not as the operator meant it to.
        raise click.ClickException("stored rules or key sets are invalid: fix them")
    click.echo("configuration OK")


# The name column of `sts check`: wide enough for the longest setting's name.
COLUMN = 31


def line(name: str, value: object) -> str:
    return f"{name:<{COLUMN}}{value}"


def _report_signing_key(settings: Settings, row: SigningKey | None) -> bool:
    """Open the active signing key with the secrets configured now, as `sts serve` does at
    start (a wrong STS_KEY_PASSPHRASE or STS_KEY_ENCRYPTION_KEY, a missing key file)."""
    if row is None:
        click.echo(line("signing key", "none yet (the first start generates one)"))
        return True
    try:
        load_current(settings, row)
    except StartupError as exc:
        click.echo(line("signing key", f"unavailable: {exc}"))
        return False
    click.echo(line("signing key", f"ok ({row.kid})"))
    return True


def _report_trust(trust: TrustConfig) -> bool:
    """Print what of the stored configuration does not load; True if all of it does."""
    rules, key_sets = trust.invalid_rules, trust.invalid_key_sets
    click.echo(line("rules", "invalid: " + ", ".join(rules) if rules else "ok"))
    click.echo(line("key sets", "invalid: " + ", ".join(key_sets) if key_sets else "ok"))
    for problem in trust.problems:
        click.echo(f"  {problem}")
    return not trust.problems


def register(cli: click.Group) -> None:
    cli.add_command(check)
