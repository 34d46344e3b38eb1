"""PostgreSQL: each thread's own connection for the exchange's transactions, kept in
psycopg's pipeline mode from one transaction to the next.

Checking a pooled connection out, switching it to autocommit and into pipeline mode, and
all of that back again when it returns to the pool, cost ~55 µs of client CPU per
transaction: 152 against 97 µs for BEGIN, the governance lock, a query and COMMIT
(bench/README.md, ninth sitting). So a thread that runs exchanges keeps a connection of
its own: opened through the pool (its connect events, and the pool's ping of a stale
connection), then detached from it, so that the pool, and every path that uses it
(sessions, the CLI), never sees a connection in pipeline mode. A transaction on it is the
same as before: BEGIN, the statements, COMMIT or ROLLBACK, and one sync.

What the pool did for these transactions is done here:

* a connection idle for longer than the engine's ping window, or last used before any
  connection of the engine (pooled or not) was found broken, is pinged before its next
  transaction and replaced if the ping fails: the rule, and the moment, of the engine's
  sts.db.engine.StaleConnectionPing, which a broken connection here also updates, so
  that the pool pings its own before the next checkout;
* a connection found broken, one a transaction left in any state but idle, and one older
  than the pool's recycle time (``RECYCLE_AFTER``) are closed; the thread's next
  transaction opens another;
* a thread's connection is closed when the thread ends (servers keep their threads; a
  server that starts one per request would otherwise leave a connection behind each);
* :meth:`PipelinedConnections.close_all` (on ``engine.dispose()``) closes them, those of
  this process only: a connection opened before a fork belongs to the parent, and closing
  it in the child would end the parent's session (it is kept, unused, instead).

There is one such connection per thread that has run an exchange: with granian, workers
times threads in all, beside each worker's pool.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Engine

from sts.db.engine import (
    PING_IDLE_AFTER,
    RECYCLE_AFTER,
    StaleConnectionPing,
    stale_connection_ping,
)


class PipelinedConnection:
    """A detached psycopg connection in autocommit and pipeline mode."""

    def __init__(self, raw: Any, driver: Any) -> None:
        self.raw = raw  # SQLAlchemy's detached proxy: closing it closes the connection
        self.driver = driver  # psycopg's connection
        self.pid = os.getpid()
        self.opened_at = self.used_at = time.monotonic()
        self._context = self.driver.pipeline()
        self.pipeline = self._context.__enter__()

    def usable(self) -> bool:
        return self.pid == os.getpid() and not self.driver.closed

    def idle(self) -> bool:
        """No transaction open and no result pending: ready for the next transaction."""
        return bool(self.driver.info.transaction_status == TransactionStatus.IDLE)

    def roll_back(self) -> bool:
        """End what a transaction that did not commit left open (failed or not); True when
        the connection is idle again. The ROLLBACK goes with one sync; a statement's error
        still pending surfaces first (it was raised to the caller already), then the
        ROLLBACK is sent again."""
        for _attempt in range(2):
            try:
                self.driver.execute("ROLLBACK")
                self.pipeline.sync()
            except Exception:  # noqa: S112 (see the docstring)
                continue
            return self.idle()
        return False

    def alive(self) -> bool:
        """A round trip: False when the server cannot answer."""
        try:
            self.driver.execute("SELECT 1")
            self.pipeline.sync()
        except Exception:  # any failure: the connection is replaced
            return False
        return self.idle()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._context.__exit__(None, None, None)
        with contextlib.suppress(Exception):
            self.raw.close()


class _ThreadsConnection:
    """Held in the thread-local storage only: collected when the thread ends, which closes
    the connection (a ``weakref.finalize`` on it)."""

    __slots__ = ("__weakref__", "connection")

    def __init__(self, connection: PipelinedConnection) -> None:
        self.connection = connection


class PipelinedConnections:
    """Each thread's :class:`PipelinedConnection` for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Without one (the engine pings every checkout): ping after PING_IDLE_AFTER idle.
        self.ping: StaleConnectionPing = stale_connection_ping(engine) or StaleConnectionPing(
            engine.dialect, PING_IDLE_AFTER
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[PipelinedConnection] = []
        self._inherited: list[PipelinedConnection] = []  # a parent's: never used nor closed

    def acquire(self) -> PipelinedConnection:
        """This thread's connection, ready for a transaction: pinged first when it may be
        stale, opened when there is none (raises SQLAlchemy's error when it cannot be)."""
        held: _ThreadsConnection | None = getattr(self._local, "held", None)
        connection = held.connection if held is not None else None
        if connection is not None and not connection.usable():
            self._forget(connection)
            connection = None
        if connection is not None and time.monotonic() - connection.opened_at > RECYCLE_AFTER:
            self.discard(connection)
            connection = None
        if connection is not None and self._may_be_stale(connection) and not connection.alive():
            self.discard(connection, broken=True)
            connection = None
        if connection is None:
            connection = self._connect()
        return connection

    def release(self, connection: PipelinedConnection, *, idle: bool) -> None:
        """After a transaction: kept when ``idle``, else closed."""
        connection.used_at = time.monotonic()
        if not idle:
            self.discard(connection)

    def discard(self, connection: PipelinedConnection, *, broken: bool = False) -> None:
        """Close it; ``broken``: the server went away, so every other connection last used
        before now is pinged before its next transaction."""
        if broken:
            self.ping.note_broken()
        held: _ThreadsConnection | None = getattr(self._local, "held", None)
        if held is not None and held.connection is connection:
            self._local.held = None
        self._closed(connection)

    def _closed(self, connection: PipelinedConnection) -> None:
        """Forget it, and close it unless it is a parent's."""
        self._forget(connection)
        if connection.pid == os.getpid():
            connection.close()

    def close_all(self) -> None:
        """Close this process's connections (the engine is being disposed)."""
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            if connection.pid == os.getpid():
                connection.close()
            else:
                self._inherited.append(connection)

    def _may_be_stale(self, connection: PipelinedConnection) -> bool:
        return (
            connection.used_at <= self.ping.broken_at
            or time.monotonic() - connection.used_at > self.ping.idle_after
        )

    def _connect(self) -> PipelinedConnection:
        raw = self.engine.raw_connection()  # the pool's connect and checkout events run
        try:
            driver: Any = raw.driver_connection
            raw.detach()  # this thread's from now on: the pool opens another in its place
            driver.autocommit = True  # BEGIN and COMMIT are sent as statements
            connection = PipelinedConnection(raw, driver)
        except BaseException:
            with contextlib.suppress(Exception):
                raw.close()
            raise
        held = self._local.held = _ThreadsConnection(connection)
        weakref.finalize(held, self._closed, connection)  # the thread ended
        with self._lock:
            self._open.append(connection)
        return connection

    def _forget(self, connection: PipelinedConnection) -> None:
        with self._lock:
            if connection not in self._open:
                return  # forgotten already (close_all, or the thread's end after discard)
            self._open.remove(connection)
        if connection.pid != os.getpid():
            self._inherited.append(connection)
