"""Engine and session factory, tuned per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from sts.db.checkpoint import SAFETY_NET_PAGES

# The page size of a NEW SQLite database (an existing one keeps its own; see the README).
# In WAL mode every commit appends each page it changed, whole: an exchange changes one
# page of each of its two tables and of their nine indexes (~12.6 frames a commit), so
# with 4 KiB pages it wrote ~52 KB of WAL, checksummed and copied by this process, to
# record ~1 KB of rows. 1 KiB pages write a quarter of that; the deeper B-trees cost less
# than the bytes saved (python -m bench.wal --database sqlite --prefill 1000000: 0.514 ->
# 0.479 ms CPU per exchange; bench/README.md). Rows and index keys longer than ~1/4 of a
# page (rare: long subjects or rule documents) spill into overflow pages, as they would
# at 4 KiB past ~1 KB.
SQLITE_PAGE_SIZE = 1024


def make_engine(url: str, **overrides: Any) -> Engine:
    """Create the engine. SQLite: WAL journal, ``synchronous=NORMAL``, a busy timeout,
    foreign keys on and 1 KiB pages for a new database. PostgreSQL: psycopg 3 with a small
    pre-pinged pool per process.

    Durability trade-off (documented in the README): with WAL and ``synchronous=NORMAL`` a
    committed transaction survives a crash of the process but the last few commits may be
    lost on power failure of the host; ``STS_DATABASE_URL`` may point to PostgreSQL where
    that matters.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url, **overrides)
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    options: dict[str, Any] = {
        "pool_pre_ping": True,  # recover by itself after the database restarts
        "pool_size": 5,
        "max_overflow": 5,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5},
    }
    options.update(overrides)
    return create_engine(url, **options)


def _make_sqlite_engine(url: str, **overrides: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"connect_args": {"timeout": 10, "check_same_thread": False}}
    options.update(overrides)
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module's own transaction handling is switched off so that SQLAlchemy's
        # BEGIN (emitted below) is the only one; this makes "BEGIN IMMEDIATE" possible.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Before anything is written: it only takes effect while the file is still empty.
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        # Checkpoints run in a background thread (sts.db.checkpoint), not inside a commit.
        cursor.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # "BEGIN IMMEDIATE" takes SQLite's single writer lock at once (see locks.py).
        immediate = connection.get_execution_options().get("sqlite_begin_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    from sts.db.locks import release_write_gate

    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "after_transaction_end", release_write_gate)
    return factory
