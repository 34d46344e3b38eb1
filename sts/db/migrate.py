"""Alembic, driven from sts (``sts db upgrade|downgrade|current``) and at start-up.

The schema lives on the ``schema`` branch (``migrations/versions/schema``). Rules revisions
live on the ``rules`` branch in their own version location (``STS_RULES_MIGRATIONS_DIR``,
written by ``sts rules migration``); its first revision depends on the schema head, a
later one only on a schema revision whose column it writes. The service's "is the schema
at head?" question looks only at the ``schema`` branch.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import Engine

from sts.errors import StartupError
from sts.settings import Settings

SCHEMA_BRANCH = "schema"
RULES_BRANCH = "rules"


def migrations_dir() -> Path:
    """The ``migrations/`` folder: beside the package in a checkout, else the working dir."""
    beside_package = Path(__file__).resolve().parents[2] / "migrations"
    if (beside_package / "env.py").is_file():
        return beside_package
    in_cwd = Path.cwd() / "migrations"
    if (in_cwd / "env.py").is_file():
        return in_cwd
    raise StartupError("cannot find the migrations/ folder (run sts from the repository root)")


def alembic_config(engine: Engine, extra_version_locations: list[Path] | None = None) -> Config:
    directory = migrations_dir()
    config = Config()
    config.set_main_option("script_location", str(directory))
    locations = [directory / "versions" / SCHEMA_BRANCH, *(extra_version_locations or [])]
    config.set_main_option("version_locations", " ".join(str(p) for p in locations))
    config.set_main_option("path_separator", "space")
    config.attributes["engine"] = engine
    return config


def alembic_config_for(settings: Settings, engine: Engine) -> Config:
    """The configuration every entry point uses: the schema plus this deployment's rules."""
    return alembic_config(engine, [settings.rules_migrations_dir.resolve()])


def schema_head(config: Config) -> str:
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head() if len(script.get_heads()) == 1 else None
    if head is None:
        revision = script.get_revision(f"{SCHEMA_BRANCH}@head")
        assert revision is not None
        head = revision.revision
    return head


def current_revisions(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_heads()


def schema_is_at_head(engine: Engine, config: Config) -> tuple[bool, str, tuple[str, ...]]:
    """(at head?, the schema head, the database's current revisions)."""
    head = schema_head(config)
    current = current_revisions(engine)
    script = ScriptDirectory.from_config(config)
    applied: set[str] = set()
    try:
        for revision in script.iterate_revisions(current, "base"):
            if revision is not None:
                applied.add(revision.revision)
    except RevisionError as exc:  # the database is at a revision none of the folders hold
        raise StartupError(
            f"the database is at revision(s) {', '.join(current)}, not all found in "
            f"{config.get_main_option('version_locations')} ({exc}): point "
            "STS_RULES_MIGRATIONS_DIR at this deployment's rules revisions (in the image: "
            "mount them at /app/migrations/versions/rules)"
        ) from None
    return head in applied, head, current


def rules_undone_by_schema_downgrade(config: Config, engine: Engine, target: str) -> list[str]:
    """The rules revisions a downgrade to ``target`` would roll back together with schema
    revisions (Alembic rolls a revision back with any revision it depends on: the first
    rules revision depends on the schema head of its time, a later one on the schema
    revision whose column it writes). Empty when it rolls back rules alone, or schema
    alone. Uses Alembic's own plan of the downgrade (``ScriptDirectory._downgrade_revs``,
    the steps ``alembic downgrade`` would run)."""
    script = ScriptDirectory.from_config(config)
    # The current heads, as Alembic's own downgrade passes them (its annotation says one).
    steps = script._downgrade_revs(target, current_revisions(engine))  # type: ignore[arg-type]
    undone = [step.revision for step in steps if step.revision is not None]
    rules = [r.revision for r in undone if RULES_BRANCH in r.branch_labels]
    schema = [r for r in undone if SCHEMA_BRANCH in r.branch_labels]
    return rules if schema else []


def upgrade(config: Config, revision: str = "heads") -> None:
    command.upgrade(config, revision)


def downgrade(config: Config, revision: str) -> None:
    command.downgrade(config, revision)


def ensure_schema_at_head(engine: Engine, config: Config, *, auto_migrate: bool) -> None:
    """Refuse to serve on an old schema; the embedded default may upgrade itself."""
    at_head, head, current = schema_is_at_head(engine, config)
    if at_head:
        return
    if auto_migrate:
        upgrade(config, f"{SCHEMA_BRANCH}@head")
        return
    shown = ", ".join(current) if current else "empty (no revision)"
    raise StartupError(f"database schema is at {shown} but sts needs {head}: run `sts db upgrade`")
