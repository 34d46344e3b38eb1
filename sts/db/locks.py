"""Cross-process mutual exclusion for rare writers (key bootstrap, rotation).

PostgreSQL: a transaction-scoped advisory lock. SQLite: the database's single-writer lock,
taken up front with ``BEGIN IMMEDIATE`` so the critical section cannot interleave.
"""

from __future__ import annotations

import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def begin_exclusive(session: Session, name: str) -> None:
    """Start the session's transaction holding a lock named ``name`` until commit/rollback.

    Must be called before the session has begun a transaction.
    """
    if session.in_transaction():
        raise RuntimeError("begin_exclusive() must start the transaction")
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={"sqlite_begin_immediate": True})
        return
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
