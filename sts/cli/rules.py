"""``sts rules``: the rules file against the database (lint, plan, migration, export, check).

The ``rules`` group is shared: other rule commands register themselves on it too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from sts.cli.common import load_settings, open_engine
from sts.db.migrate import alembic_config_for, current_revisions, schema_head, schema_is_at_head
from sts.rules import ops
from sts.rules.document import (
    RulesFile,
    RulesFileError,
    State,
    load_rules_file,
    parse_rules_text,
    render_state,
)
from sts.rules.lint import lint_rules
from sts.rules.migration import RulesMigrationError, rules_head, write_revision
from sts.rules.plan import diff_states, render_plan
from sts.settings import Settings

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("rules")
def rules_group() -> None:
    """Rules, issuers, clients and credentials, administered from a reviewed rules file."""


def load_file(path: Path, settings: Settings) -> RulesFile:
    """The validated file, or an error listing every problem (exit code 1)."""
    try:
        return load_rules_file(path, max_ttl=settings.max_token_ttl)
    except RulesFileError as exc:
        count = len(exc.problems)
        raise click.ClickException(
            f"{path}: {count} problem{'s' if count != 1 else ''}\n{exc}"
        ) from None


def read_database_state(engine: Engine, settings: Settings) -> State:
    at_head, head, current = schema_is_at_head(engine, alembic_config_for(settings, engine))
    if not at_head:
        shown = ", ".join(current) or "base"
        raise click.ClickException(
            f"database schema is at {shown}, not {head}: run `sts db upgrade`"
        )
    with engine.connect() as connection:
        return ops.read_state(connection)


@rules_group.command("lint")
@click.argument("path", type=FILE)
def rules_lint(path: Path) -> None:
    """Report problems and over-broad rules in PATH; exit 1 if there is any (for CI)."""
    settings = load_settings()
    rules_file = parse_rules_text(
        path.read_text(encoding="utf-8"), str(path), max_ttl=settings.max_token_ttl
    )
    for problem in rules_file.problems:
        click.echo(f"{problem} [invalid]")
    findings = lint_rules(rules_file)
    for finding in findings:
        click.echo(str(finding))
    total = len(rules_file.problems) + len(findings)
    if total:
        click.echo(f"{total} finding{'s' if total != 1 else ''}")
        raise click.exceptions.Exit(1)
    click.echo(f"{path}: no findings")


@rules_group.command("plan")
@click.argument("path", type=FILE)
def rules_plan(path: Path) -> None:
    """Show what applying PATH would change in the database, field by field."""
    settings = load_settings()
    rules_file = load_file(path, settings)
    with open_engine(settings) as engine:
        current = read_database_state(engine, settings)
    click.echo(render_plan(diff_states(current, rules_file.state)), nl=False)


@rules_group.command("check")
@click.argument("path", type=FILE)
def rules_check(path: Path) -> None:
    """Exit 1 if the database differs from PATH (drift), printing the difference."""
    settings = load_settings()
    rules_file = load_file(path, settings)
    with open_engine(settings) as engine:
        current = read_database_state(engine, settings)
    changes = diff_states(current, rules_file.state)
    if changes:
        click.echo(f"drift: the database differs from {path}", err=True)
        click.echo(render_plan(changes), nl=False)
        raise click.exceptions.Exit(1)
    click.echo(f"in sync: the database matches {path}")


@rules_group.command("migration")
@click.argument("path", type=FILE)
@click.option("-m", "--message", required=True, help="What the change is for (the title).")
def rules_migration(path: Path, message: str) -> None:
    """Write a rules revision that applies PATH (and whose downgrade undoes it)."""
    settings = load_settings()
    rules_file = load_file(path, settings)
    with open_engine(settings) as engine:
        config = alembic_config_for(settings, engine)
        script = ScriptDirectory.from_config(config)
        try:
            head = rules_head(script)
        except RulesMigrationError as exc:
            raise click.ClickException(str(exc)) from None
        if head is not None and head not in current_revisions(engine):
            # A plan must start from the state the last revision leaves, or its downgrade
            # would "restore" a state that never existed.
            raise click.ClickException(
                f"the database is not at the rules head {head}: run `sts db upgrade` first"
            )
        current = read_database_state(engine, settings)
        changes = diff_states(current, rules_file.state)
        try:
            new = write_revision(
                changes,
                script=script,
                directory=settings.rules_migrations_dir,
                schema_head=schema_head(config),
                message=message,
                source=str(path),
                created=datetime.now(UTC),
            )
        except RulesMigrationError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(render_plan(changes), nl=False)
    click.echo(f"wrote {new.path} (revision {new.revision}); apply it with `sts db upgrade`")


@rules_group.command("export")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
def rules_export(output: Path | None) -> None:
    """Print the database's issuers, clients, credentials and rules as a rules file."""
    settings = load_settings()
    with open_engine(settings) as engine:
        text = render_state(read_database_state(engine, settings))
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"wrote {output}")


def register(cli: click.Group) -> None:
    cli.add_command(rules_group)
