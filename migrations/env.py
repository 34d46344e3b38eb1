"""Alembic environment for sts. Run through ``sts db ...`` (which passes the engine in)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from sts.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine: Engine | None = config.attributes.get("engine")
    if engine is None:  # plain `alembic` with sqlalchemy.url in an alembic.ini
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("sts migrations run online only: use `sts db upgrade`")
run_migrations_online()
