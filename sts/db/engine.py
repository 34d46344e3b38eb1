"""Engine and session factory, tuned per backend."""

from __future__ import annotations

import logging
import os
import stat
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from sts.db.checkpoint import SAFETY_NET_PAGES
from sts.db.locks import WRITE_LOCK_TIMEOUT

log = logging.getLogger(__name__)

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

# A pooled PostgreSQL connection is pinged on checkout only when it was last used longer
# ago than this, or before some connection of the pool was found broken (HikariCP's
# "alive bypass window", 500 ms by default, is the same idea). A ping is a round trip of
# its own: pinging every checkout cost 9 % of an exchange's client CPU and 10 % of the
# backend's (bench/README.md).
PING_IDLE_AFTER = 0.5
# What every sts session on PostgreSQL runs with (libpq's ``options``; a URL's own
# ``options`` are kept and come after, so an operator's setting wins). JIT off: sts's
# queries are short OLTP statements, and the few whose estimated cost passes
# ``jit_above_cost`` (an identity's revocation walking tens of thousands of tokens while
# every exchange waits; ``sts gc``'s batches) spent 0.3-0.45 s compiling code that then
# ran for less than that (``python -m bench.sweep --database postgresql``: 70,000 tokens,
# 3.1 s of which JIT 0.46 s; PostgreSQL's docs advise against JIT for short queries).
POSTGRES_SESSION_OPTIONS = "-c jit=off"
# PostgreSQL connections are replaced after this many seconds (the pool's ``pool_recycle``,
# and each thread's own connection, sts.db.pipelined): no session lives for ever.
RECYCLE_AFTER = 1800


def make_engine(url: str, *, ping_idle_after: float = PING_IDLE_AFTER, **overrides: Any) -> Engine:
    """Create the engine. SQLite: WAL journal, ``synchronous=NORMAL``, a busy timeout,
    foreign keys on and 1 KiB pages for a new database. PostgreSQL: psycopg 3 with a small
    pool per process whose connections are pinged on checkout when they may be stale
    (:class:`StaleConnectionPing`), and JIT off in its sessions
    (:data:`POSTGRES_SESSION_OPTIONS`).

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
        "pool_size": 5,
        "max_overflow": 5,
        "pool_recycle": RECYCLE_AFTER,
        "connect_args": {
            "connect_timeout": 5,
            "options": _session_options(parsed.query.get("options")),
        },
    }
    options.update(overrides)
    engine = create_engine(url, **options)
    if not options.get("pool_pre_ping"):
        StaleConnectionPing(engine.dialect, ping_idle_after).listen(engine)
    return engine


def _session_options(from_url: str | tuple[str, ...] | None) -> str:
    """libpq's ``options`` for an sts session: :data:`POSTGRES_SESSION_OPTIONS`, then the
    URL's own (``connect_args`` would otherwise replace them; a later ``-c`` wins)."""
    given = [from_url] if isinstance(from_url, str) else list(from_url or ())
    return " ".join([POSTGRES_SESSION_OPTIONS, *given])


class StaleConnectionPing:
    """Recover by itself after the database restarts, without a round trip per checkout.

    A connection is pinged on checkout (and replaced, with every other connection of the
    pool, if the ping finds it dead, as SQLAlchemy's ``pool_pre_ping`` does) when it has
    been idle for more than ``idle_after`` seconds, or when a connection of the pool has
    been found broken since it was last used. So after an outage every connection is
    checked before use: the outage itself broke the ones used during it, and the others
    were idle. What is left is a connection whose server went away and came back within
    ``idle_after`` of its last use, unnoticed by any other: the one exchange that uses it
    next is refused (503 ``temporarily_unavailable``, no token) and invalidates it, which
    gets the others pinged.
    """

    _USED_AT = "sts_used_at"

    def __init__(self, dialect: Dialect, idle_after: float) -> None:
        self.dialect = dialect
        self.idle_after = idle_after
        self.broken_at = float("-inf")

    def listen(self, engine: Engine) -> None:
        event.listen(engine, "connect", self._mark_used)
        event.listen(engine, "checkin", self._mark_used)
        event.listen(engine, "invalidate", self._note_broken)
        event.listen(engine, "checkout", self._ping_if_stale)
        _STALE_PINGS[engine] = self

    def note_broken(self) -> None:
        """A connection was found broken: every connection last used before now is pinged
        before its next use (also the exchange's own, sts.db.pipelined)."""
        self.broken_at = time.monotonic()

    def _mark_used(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[self._USED_AT] = time.monotonic()

    def _note_broken(
        self, _dbapi_connection: Any, _record: ConnectionPoolEntry, exception: Any
    ) -> None:
        if exception is not None:
            self.note_broken()

    def _ping_if_stale(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any
    ) -> None:
        used_at = record.info.get(self._USED_AT)
        if (
            used_at is not None
            and used_at > self.broken_at
            and time.monotonic() - used_at <= self.idle_after
        ):
            return
        try:
            self.dialect.do_ping(dbapi_connection)
        except self.dialect.loaded_dbapi.Error as exc:
            if self.dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool replaces this connection and every one older than now.
                raise InvalidatePoolError() from exc
            raise


# Each PostgreSQL engine's ping rule, for the connections that leave its pool
# (sts.db.pipelined): one "found broken" moment for all of them.
_STALE_PINGS: weakref.WeakKeyDictionary[Engine, StaleConnectionPing] = weakref.WeakKeyDictionary()


def stale_connection_ping(engine: Engine) -> StaleConnectionPing | None:
    """The engine's :class:`StaleConnectionPing` (None: it pings every checkout)."""
    return _STALE_PINGS.get(engine)


def _create_private(path: Path) -> None:
    """A new SQLite database is readable by its owner only: it holds the audit log, the
    lineage of every token, client secret hashes and, with the database keystore, the
    encrypted signing keys. Its folder is created 0700 and the file 0600 before SQLite
    opens it; SQLite gives the -wal and -shm files the database file's permissions. An
    existing file keeps its mode (a warning says when others can read it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "%s is readable by others (mode %04o): it holds the audit log and lineage; "
                "run `chmod 600` on it and its -wal and -shm files",
                path,
                mode,
            )


def _make_sqlite_engine(url: str, **overrides: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        _create_private(Path(database))
    options: dict[str, Any] = {
        "connect_args": {"timeout": WRITE_LOCK_TIMEOUT, "check_same_thread": False}
    }
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
        cursor.execute(f"PRAGMA busy_timeout={int(WRITE_LOCK_TIMEOUT * 1000)}")
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
