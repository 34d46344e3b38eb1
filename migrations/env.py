"""Alembic environment for sts. Run through ``sts db ...`` (which passes the engine in)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alembic import context
from sqlalchemy import Connection, Engine, create_engine

from sts.db.models import Base

config = context.config
target_metadata = Base.metadata


@contextlib.contextmanager
def sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """On SQLite, foreign keys off for the block (nothing elsewhere).

    A batch operation rebuilds a table (copy, DROP, rename); with foreign keys enforced,
    the DROP of a table whose rows reference each other (a token and its parent) fails.
    SQLite's procedure for such changes: keys off, outside any transaction, then PRAGMA
    foreign_key_check before the commit (see :func:`check_foreign_keys`), keys on again
    (https://www.sqlite.org/lang_altertable.html, "other kinds of table schema changes").
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        driver.execute("PRAGMA foreign_keys=ON")


def check_foreign_keys(connection: Connection) -> None:
    """Refuse (and so roll back) an upgrade that left a row pointing nowhere (SQLite; on
    PostgreSQL the keys were enforced all along)."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration left broken foreign keys: {broken[:5]}")


def run_migrations_online() -> None:
    engine: Engine | None = config.attributes.get("engine")
    if engine is None:  # plain `alembic` with sqlalchemy.url in an alembic.ini
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
            # SQLite's DDL is transactional, though Alembic assumes not: one transaction for
            # the whole upgrade, so the foreign-key check can still undo it.
            transactional_ddl=True,
            compare_type=True,
        )
        with sqlite_foreign_keys_off(connection), context.begin_transaction():
            context.run_migrations()
            check_foreign_keys(connection)


if context.is_offline_mode():
    raise SystemExit("sts migrations run online only: use `sts db upgrade`")
run_migrations_online()
