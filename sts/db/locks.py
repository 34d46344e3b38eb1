"""Cross-process mutual exclusion for rare writers (key lifecycle, operator revocations).

PostgreSQL: a transaction-scoped advisory lock. SQLite: the database's single-writer lock,
taken up front with ``BEGIN IMMEDIATE`` so the critical section cannot interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

# How long a SQLite writer waits for the write lock, at the gate and in SQLite's own busy
# handler (sts.db.engine), before it gives up: the caller gets "database is locked", which
# the exchange answers with 503 temporarily_unavailable.
WRITE_LOCK_TIMEOUT = 10.0

# The governance lock: every exchange holds it SHARED until it commits (PostgreSQL; SQLite's
# write gate excludes every other writer anyway), and whatever makes exchanges refusable
# takes it EXCLUSIVELY before it looks for the tokens already issued: a signing key's
# lifecycle steps (a compromise above all: sts.keys.lifecycle) and the revocation of an
# identity or a service credential (sts.revocation). So an exchange either committed
# before the lock was granted, and its token is found (READ COMMITTED: a statement after
# the lock sees it), or it waits for the commit and its own check, later, sees the key's
# or the identity's block. The advisory key is derived from the name, which predates the
# revocations' use of it and is kept: replicas of an older release still hold the same
# lock (a new name would let their exchanges slip past a compromise during an upgrade).
GOVERNANCE_LOCK = "signing-keys"


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def begin_exclusive(session: Session, name: str) -> None:
    """Start the session's transaction holding a lock named ``name`` until commit/rollback.

    Must be called before the session has begun a transaction.
    """
    if session.in_transaction():
        raise RuntimeError("begin_exclusive() must start the transaction")
    hold_exclusive(session, name)


def hold_exclusive(session: Session, name: str) -> None:
    """Hold the lock named ``name`` until the session's transaction ends, from here on:
    the statements after this call see everything its previous holders committed.

    PostgreSQL: a transaction-scoped advisory lock (re-entrant: taken again in the same
    transaction, it is granted at once). SQLite: the single writer lock is the named lock;
    a session not yet in a transaction begins a write transaction (:func:`begin_write`),
    one already in a transaction must be in one (as ``write_transaction`` makes).
    """
    if session.in_nested_transaction():
        # A rollback to the savepoint would release PostgreSQL's lock while the mark
        # below (on the outer transaction) still said it was held.
        raise RuntimeError("hold_exclusive() inside a savepoint")
    if session.get_bind().dialect.name == "sqlite":
        if not session.in_transaction():
            begin_write(session)
    else:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
    transaction = session.get_transaction()
    held: tuple[Any, set[str]] | None = session.info.get(_HELD)
    if held is None or held[0] is not transaction:
        held = session.info[_HELD] = (transaction, set())
    held[1].add(name)


# Session.info key: (the transaction that took them, the names held exclusively).
_HELD = "sts.locks.held_exclusive"


def holds_exclusive(session: Session, name: str) -> bool:
    """Has this session's current transaction taken ``name`` with :func:`hold_exclusive`?
    (A mark left by an earlier transaction of the session does not count.)"""
    held = session.info.get(_HELD)
    transaction = session.get_transaction()
    return (
        held is not None and transaction is not None and held[0] is transaction and name in held[1]
    )


class SqliteWriteGate:
    """Queues this database's writers in the kernel instead of in SQLite's busy handler.

    SQLite admits one writer at a time; a writer that finds the lock taken sleeps in the
    busy handler with growing back-off (1, 2, 5, 10 ms, ...) and wakes late, which wastes
    the lock's idle time and puts 100+ ms spikes on p99 when workers contend. Holding an
    ``flock`` on a file beside the database for the whole write transaction makes waiters
    block in the kernel and wake the moment it is released. A thread lock in front of it
    serialises threads of one process (flock is per open file, so it would not).

    Opened lazily per process: a descriptor inherited across ``fork`` would share one lock
    between the parent and the children. For the same reason a forked child starts with a
    fresh thread lock: one held by a parent's thread at the fork would never be released.

    The wait is bounded (``timeout``): a process that holds the gate and never lets go (a
    command stopped with Ctrl-Z inside its transaction, a hung one) must cost writers a
    503, not hang them. ``flock`` itself cannot time out, so a contended wait is handed to
    this process's waiter thread (:class:`_FlockWaiter`), which blocks in the kernel and
    wakes the writer the moment the lock is its; an uncontended acquire is one
    non-blocking ``flock``, as before.
    """

    def __init__(self, path: str, timeout: float = WRITE_LOCK_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._pid = 0
        self._after_fork()

    def _after_fork(self) -> None:
        self._thread_lock = threading.Lock()
        self._owner: int | None = None
        self._waiter: _FlockWaiter | None = None  # threads do not survive fork

    def acquire(self) -> None:
        """Take the gate, or raise ``OperationalError`` ("database is locked") after
        ``timeout`` seconds."""
        if self._owner == threading.get_ident():
            # A write transaction opened inside another on the same thread would wait for
            # itself forever (and hold every other writer behind it): fail loudly instead.
            raise RuntimeError("nested SQLite write transaction on one thread")
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise _locked("another thread of this process holds the SQLite write gate")
        try:
            if self._fd is None or self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self._waiter is None:
                    self._waiter = _FlockWaiter(self._fd)
                if not self._waiter.wait(max(deadline - time.monotonic(), 0.0)):
                    raise _locked("another process holds the SQLite write gate") from None
        except BaseException:
            self._thread_lock.release()
            raise
        self._owner = threading.get_ident()

    def release(self) -> None:
        self._owner = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


class _FlockWaiter:
    """A daemon thread that takes one process's ``flock`` on behalf of a writer who may
    stop waiting. The gate's thread lock lets one writer at a time ask.

    If the writer gave up before the lock came, the thread lets it go again at once; if a
    writer asks while an abandoned wait is still pending, it takes that wait over.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._mutex = threading.Lock()
        self._asked = threading.Event()
        self._granted = threading.Event()
        self._pending = False  # the thread is in (or about to enter) flock
        self._abandoned = False
        threading.Thread(target=self._run, name="sts-write-gate", daemon=True).start()

    def wait(self, timeout: float) -> bool:
        """True once the lock is this process's; False after ``timeout`` seconds."""
        with self._mutex:
            self._abandoned = False
            if not self._pending:
                self._pending = True
                self._granted.clear()
                self._asked.set()
        if self._granted.wait(timeout):
            return True
        with self._mutex:
            if self._granted.is_set():  # came as the wait ran out: it is ours
                return True
            self._abandoned = True
            return False

    def _run(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._mutex:
                self._pending = False
                if self._abandoned:
                    self._abandoned = False
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                else:
                    self._granted.set()


def _locked(why: str) -> OperationalError:
    """What SQLite's own busy timeout raises, so that callers handle both alike."""
    return OperationalError("(sqlite write gate)", None, TimeoutError(f"database is locked: {why}"))


_GATES: dict[str, SqliteWriteGate] = {}
_GATES_LOCK = threading.Lock()
_GATE_KEY = "sts_sqlite_write_gate"


def sqlite_write_gate(database: str) -> SqliteWriteGate:
    with _GATES_LOCK:
        gate = _GATES.get(database)
        if gate is None:
            gate = _GATES[database] = SqliteWriteGate(database + ".writelock")
        return gate


def _gates_after_fork() -> None:
    for gate in _GATES.values():
        gate._after_fork()  # the descriptor is replaced on first use (pid check)


os.register_at_fork(after_in_child=_gates_after_fork)


def begin_write(session: Session) -> None:
    """Start a write transaction. On SQLite: pass the write gate, then take the database's
    write lock up front (``BEGIN IMMEDIATE``): a read that later upgrades to a write could
    otherwise fail under concurrency (WAL). The gate is released when the transaction
    ends (see :func:`release_write_gate`)."""
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        return
    database = bind.engine.url.database
    if database and database != ":memory:":
        gate = sqlite_write_gate(database)
        gate.acquire()
        session.info[_GATE_KEY] = gate
    try:
        session.connection(execution_options={"sqlite_begin_immediate": True})
    except BaseException:
        release_gate_of(session)
        raise


@contextlib.contextmanager
def write_transaction(session_factory: Callable[[], Session]) -> Iterator[Session]:
    """A session in a write transaction (:func:`begin_write`), committed when the block
    ends without an error, rolled back otherwise."""
    with session_factory() as session:
        begin_write(session)
        yield session
        session.commit()


def release_gate_of(session: Session) -> None:
    gate = session.info.pop(_GATE_KEY, None)
    if gate is not None:
        gate.release()


def release_write_gate(session: Session, transaction: Any) -> None:
    """Session ``after_transaction_end`` hook: the outermost transaction ended (commit or
    rollback), so the next writer may go."""
    if transaction.parent is None and not transaction.nested:
        release_gate_of(session)
