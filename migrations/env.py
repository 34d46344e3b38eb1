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
        sqlite = connection.dialect.name == "sqlite"
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,  # ALTER TABLE on SQLite
            # SQLite's DDL is transactional, though Alembic assumes not: one transaction for
            # the whole upgrade, so the foreign-key check below can still undo it.
            transactional_ddl=True,
            compare_type=True,
        )
        if not sqlite:
            with context.begin_transaction():
                context.run_migrations()
            return
        # A batch operation rebuilds a table (copy, DROP, rename); with foreign keys
        # enforced, the DROP of a table whose rows reference each other (a token and its
        # parent) fails. SQLite's procedure for such changes: keys off, outside any
        # transaction, then PRAGMA foreign_key_check before the commit
        # (https://www.sqlite.org/lang_altertable.html, "other kinds of table schema changes").
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with context.begin_transaction():
                context.run_migrations()
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migration left broken foreign keys: {broken[:5]}")
        finally:
            if connection.in_transaction():
                connection.rollback()
            driver.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    raise SystemExit("sts migrations run online only: use `sts db upgrade`")
run_migrations_online()
