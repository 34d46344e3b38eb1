"""The exchange's transaction, run on the driver's connection.

Every exchange runs the same few statements: read the credential or the parent token,
check blocks, claim a status-list index, insert the lineage row and the audit row. Through
the Session and Core each costs 0.1-0.2 ms of SQLAlchemy CPU; the driver itself needs
about 10 µs (``python -m bench.profile``: the database was half of an exchange's CPU).
So the statements are still built with Core from the models (``sts.db.queries``), but
compiled ONCE per dialect and executed on the pooled DBAPI connection (on SQLite, a write
transaction uses the process's one write connection, see ``ExchangeStore.writer``).
Pooling, the ping of a stale connection on checkout (sts.db.engine) and invalidation of a
broken connection stay SQLAlchemy's; driver errors are raised as SQLAlchemy's
``DBAPIError`` subclasses, like any other database error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from sts.db import queries
from sts.db.checkpoint import WalCheckpointer
from sts.db.group_commit import GroupCommit
from sts.db.locks import GOVERNANCE_LOCK, SqliteWriteGate, lock_key, sqlite_write_gate
from sts.db.pipelined import PipelinedConnection, PipelinedConnections
from sts.db.status_indexes import IndexBlock, StatusIndexPool
from sts.db.types import fast_bind_processor

T = TypeVar("T")

# At DEBUG, every statement the exchange runs (never its parameters: they name tokens).
log = logging.getLogger(__name__)


class Prepared:
    """One statement compiled for one dialect, with its bind processors (UTC datetimes,
    JSON, ...) resolved up front: ``params`` turns named values into what the driver
    takes. A UTC datetime on SQLite gets an equivalent one-step processor
    (``sts.db.types.fast_bind_processor``): an exchange's inserts bind three."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self._defaults: dict[str, Any] = {}  # literals in the statement, e.g. "+ 1"
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            if not bind.required:
                self._defaults[name] = bind.effective_value
            processor = fast_bind_processor(bind.type, dialect) or bind.type.dialect_impl(
                dialect
            ).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
        # Positional drivers (SQLite): each place's name and processor, in order.
        self._places: tuple[tuple[str, Callable[[Any], Any] | None], ...] | None = None
        if compiled.positional:
            names = compiled.positiontup or ()
            self._places = tuple((name, self._processors.get(name)) for name in names)

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        if self._places is not None:
            merged = {**self._defaults, **values} if self._defaults else values
            return tuple(
                [
                    merged[name] if processor is None else processor(merged[name])
                    for name, processor in self._places
                ]
            )
        named = {**self._defaults, **values}  # a copy: the caller's dict is left as it was
        for name, processor in self._processors.items():
            named[name] = processor(named[name])
        return named


class ExchangeStore:
    """The exchange's statements for one engine, and the factory of its transactions."""

    def __init__(self, engine: Engine, *, checkpoint_interval: float, status_block: int) -> None:
        self.engine = engine
        self.status_indexes = StatusIndexPool(status_block)
        dialect = engine.dialect
        self.is_sqlite = dialect.name == "sqlite"
        database = engine.url.database if self.is_sqlite else None
        path = database if database and database != ":memory:" else None
        self.gate: SqliteWriteGate | None = None
        self.checkpointer: WalCheckpointer | None = None
        self.group_commit: GroupCommit | None = None
        self._writer: Any = None  # this process's SQLite write connection (see writer())
        self._writer_pid = 0
        self._inherited: list[Any] = []
        if path:
            self.gate = sqlite_write_gate(path)
            checkpointer = WalCheckpointer(path, checkpoint_interval, self.gate)
            self.checkpointer = checkpointer
            self.group_commit = GroupCommit(self.write)
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        # PostgreSQL (psycopg): each thread's connection, kept in pipeline mode.
        self.pipelined: PipelinedConnections | None = None
        if dialect.driver == "psycopg":
            self.pipelined = PipelinedConnections(engine)
        if self.checkpointer is not None or self.pipelined is not None:
            event.listen(engine, "engine_disposed", self._on_engine_disposed)
        prepare = self._prepare
        self.credential_by_key_id = prepare(queries.CREDENTIAL_BY_KEY_ID)
        self.parent_revocation_state = prepare(queries.PARENT_REVOCATION_STATE)
        self.claim_status_block = prepare(queries.CLAIM_STATUS_BLOCK)
        self.add_status_list = prepare(queries.ADD_STATUS_LIST)
        self.insert_issued_token = prepare(queries.INSERT_ISSUED_TOKEN)
        self.insert_audit = prepare(queries.INSERT_AUDIT)
        self.insert_client_assertion = prepare(queries.INSERT_CLIENT_ASSERTION_ONCE[dialect.name])
        self.insert_dpop_proof = prepare(queries.INSERT_DPOP_PROOF_ONCE[dialect.name])
        self.share_governance_lock = (
            prepare(queries.SHARE_GOVERNANCE_LOCK) if dialect.name == "postgresql" else None
        )
        self.governance_lock_key = {"key": lock_key(GOVERNANCE_LOCK)}
        self._blocks: dict[int, Prepared] = {}
        self._records: dict[int, Prepared] = {}  # PostgreSQL: record_unless_blocked
        self._records_spending: dict[int, Prepared] = {}  # ... that also spends a DPoP proof
        self._prepared_lock = threading.Lock()

    def writer(self) -> Any:
        """This process's one SQLite write connection; only used behind the write gate.

        The gate already lets one thread of a process write at a time, so one connection
        serves them all, and it stays the same from one exchange to the next. That saves
        the pool checkout, and it keeps the connection's page cache: SQLite drops a
        connection's whole cache whenever ANOTHER connection has committed since its
        last transaction (python -m bench: +0.1-0.2 ms per exchange), and with a pool the
        threads of one process took turns with different connections.
        """
        if self._writer_pid != os.getpid():
            if self._writer is not None:
                # Opened by the parent before a fork: never used (nor closed) here.
                self._inherited.append(self._writer)
            self._writer, self._writer_pid = None, os.getpid()
        if self._writer is None:
            self._writer = self.engine.raw_connection()
        return self._writer

    def drop_writer(self) -> None:
        """Close the write connection (after an error it could not roll back)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if self._writer_pid != os.getpid():
            # The parent's, seen by a forked child (engine disposed in a new worker): kept,
            # never closed here; a collected connection would close itself in this process.
            self._inherited.append(writer)
            return
        with contextlib.suppress(Exception):
            writer.close()

    def _on_engine_disposed(self, _engine: Engine) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.pipelined is not None:
            self.pipelined.close_all()
        self.drop_writer()

    def _prepare(self, statement: ClauseElement) -> Prepared:
        return Prepared(statement, self.engine.dialect)

    def active_blocks(self, pairs: int) -> Prepared:
        return self._per_pairs(self._blocks, queries.active_blocks_statement, pairs)

    def record_unless_blocked(self, pairs: int, proof: bool = False) -> Prepared:
        if proof:
            return self._per_pairs(self._records_spending, _spending_proof, pairs)
        return self._per_pairs(self._records, queries.record_unless_blocked_statement, pairs)

    def _per_pairs(
        self, cache: dict[int, Prepared], build: Callable[[int], ClauseElement], pairs: int
    ) -> Prepared:
        """A statement for ``pairs`` identities, compiled once."""
        prepared = cache.get(pairs)
        if prepared is None:
            with self._prepared_lock:
                prepared = cache[pairs] = self._prepare(build(pairs))
        return prepared

    def run_write(self, work: Callable[[ExchangeTransaction], T]) -> T:
        """``work(transaction)`` in a write transaction, committed; its result once the
        COMMIT has returned. Raises what ``work`` raised (its writes rolled back) or the
        database's error. On a SQLite file, the work of concurrent threads shares one
        transaction (sts.db.group_commit); elsewhere each runs in its own."""
        if self.group_commit is not None:
            return self.group_commit.run(work)
        with self.write() as transaction:
            result = work(transaction)
            transaction.commit()
        return result

    def write(self) -> ExchangeTransaction:
        """A write transaction: on SQLite, behind the write gate and ``BEGIN IMMEDIATE``
        (see sts.db.locks)."""
        return ExchangeTransaction(self, write=True)

    def read(self) -> ExchangeTransaction:
        """A read-only transaction (rolled back at the end)."""
        return ExchangeTransaction(self, write=False)


def _spending_proof(pairs: int) -> ClauseElement:
    return queries.record_unless_blocked_statement(pairs, proof=True)


class Blocks:
    """The blocks an exchange's check found: known once its transaction has committed.

    On PostgreSQL the check travels with the writes and the COMMIT (one round trip), so
    its rows are read when the COMMIT has returned; on SQLite they are known at once.
    """

    __slots__ = ("_found",)

    def __init__(self, found: list[tuple[str, str]] | None = None) -> None:
        self._found = found

    def set(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._found = [(str(kind), str(value)) for kind, value in rows]

    def found(self) -> list[tuple[str, str]]:
        """The (kind, value) of the un-lifted blocks found (empty: none)."""
        if self._found is None:
            raise RuntimeError("blocks read before their transaction committed")
        return self._found

    def kinds(self) -> list[str]:
        """The kinds of the un-lifted blocks found (empty: none)."""
        return [kind for kind, _value in self.found()]


class ExchangeTransaction:
    """One transaction, rolled back unless :meth:`commit` ran: on PostgreSQL on the thread's
    pipelined connection (sts.db.pipelined), on SQLite on the process's write connection
    (writes) or a pooled one (reads)."""

    def __init__(self, store: ExchangeStore, *, write: bool) -> None:
        self.store = store
        self.write = write
        self._connection: Any = None
        self._cursor: Any = None
        self._pipeline: Any = None
        self._pipelined: PipelinedConnection | None = None
        self._gate_held = False
        self._dedicated = False  # on the process's SQLite write connection
        self._committed = False
        self._claimed: list[IndexBlock] = []  # the pool's only once this transaction commits
        self._deferred: list[tuple[Any, Blocks]] = []  # (cursor, Blocks) read after COMMIT

    def __enter__(self) -> ExchangeTransaction:
        store = self.store
        if store.checkpointer is not None:
            store.checkpointer.ensure_running()  # once per process (after a fork too)
        try:
            if store.pipelined is not None:
                self._begin_pipelined(store.pipelined)
                return self
            if self.write and store.gate is not None:
                store.gate.acquire()
                self._gate_held = True
                self._connection = store.writer()
                self._dedicated = True
            else:
                self._connection = store.engine.raw_connection()  # pool checkout (+ ping if stale)
            self._cursor = self._connection.cursor()
            if store.is_sqlite:
                # The sqlite3 module's own transaction handling is off (see engine.py).
                self._run("BEGIN IMMEDIATE" if self.write else "BEGIN", ())
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()

    def _begin_pipelined(self, connections: PipelinedConnections) -> None:
        """psycopg pipeline mode: statements are sent without waiting for their results,
        which come back at the next sync. BEGIN and COMMIT are the transaction's own
        statements in the pipeline, on a connection in autocommit: psycopg's implicit
        BEGIN would sync (a round trip of its own), and so would its commit() before the
        pipeline's sync. So an exchange from an external JWT is one round trip: BEGIN, the
        governance lock, the fused block check and writes, COMMIT, then the one sync
        (README: Database and durability). The connection is the thread's own, already in
        pipeline mode (sts.db.pipelined)."""
        self._pipelined = connections.acquire()
        self._pipeline = self._pipelined.pipeline
        self._cursor = self._pipelined.driver.cursor()
        self._run("BEGIN", ())

    # ---- the statements ------------------------------------------------------------

    def hold_governance_shared(self) -> None:
        """Until this transaction ends, no key lifecycle step (a compromise above all) and
        no revocation of an identity or a credential can commit: one that began first is
        waited for, one that begins later waits (sts.db.locks.GOVERNANCE_LOCK). On
        PostgreSQL a shared advisory lock, queued before the first reads (every later
        statement, the block check included, sees what such a step committed); on SQLite
        the write gate already excludes every other writer."""
        prepared = self.store.share_governance_lock
        if prepared is not None:
            self._execute(prepared, self.store.governance_lock_key)

    def credential_by_key_id(self, key_id: str) -> tuple[Any, ...] | None:
        """(id, name, owner_subject, secret_hash, disabled) of a service credential."""
        return self._one(self.store.credential_by_key_id, {"key_id": key_id})

    def parent_revocation_state(self, jti: str) -> tuple[bool, bool]:
        """(known?, revoked?) of an sts token, held FOR SHARE on PostgreSQL."""
        row = self._one(self.store.parent_revocation_state, {"jti": jti})
        return (False, False) if row is None else (True, row[0] is not None)

    def active_blocks(self, identities: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The un-lifted blocks (kind, value) on any of these (kind, value) identities."""
        if not identities:
            return []
        prepared = self.store.active_blocks(len(identities))
        rows = self._all(prepared, queries.active_blocks_params(identities))
        return [(str(kind), str(value)) for kind, value in rows]

    def check_blocks(self, identities: Sequence[tuple[str, str]]) -> Blocks:
        """:meth:`active_blocks`, with nothing recorded; on PostgreSQL read after COMMIT."""
        prepared = self.store.active_blocks(len(identities))
        return self._deferred_rows(prepared, queries.active_blocks_params(identities))

    def record_unless_blocked(
        self,
        identities: Sequence[tuple[str, str]],
        issued_token: Mapping[str, Any],
        audit: Mapping[str, Any],
        proof: Mapping[str, Any] | None = None,
    ) -> Blocks:
        """A token's lineage and audit rows, recorded only if none of ``identities`` (at
        least one) is blocked; the blocks found. On PostgreSQL one statement (the check
        and both inserts see one snapshot) sent with the COMMIT; on SQLite, behind the
        write lock, the check and then the inserts.

        ``proof`` (``jkt``, ``jti``, ``expires_at``): a DPoP proof to spend first, blocked
        or not; if it was spent already, nothing else is recorded and the blocks found
        include :data:`sts.db.queries.SPENT_PROOF` (on PostgreSQL in the same statement:
        no round trip of its own)."""
        if not self.store.is_sqlite:
            values = {**queries.active_blocks_params(identities), **issued_token}
            values.update({f"audit_{name}": value for name, value in audit.items()})
            if proof is not None:
                values.update({f"proof_{name}": value for name, value in proof.items()})
            prepared = self.store.record_unless_blocked(len(identities), proof is not None)
            return self._deferred_rows(prepared, values)
        spent = proof is not None and not self.record_dpop_proof(**proof)
        found = self.active_blocks(identities)
        if spent:  # as on PostgreSQL: the blocks found too, and nothing recorded
            return Blocks([(queries.SPENT_PROOF, ""), *found])
        if not found:
            self.record_issued_token(issued_token)
            self.record_audit(audit)
        return Blocks(found)

    def record_client_assertion(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """False when this (client, jti) was already recorded: a replay."""
        values = {"client_id": client_id, "jti": jti, "expires_at": expires_at}
        return self._execute_counting(self.store.insert_client_assertion, values) > 0

    def record_dpop_proof(self, jkt: str, jti: str, expires_at: datetime) -> bool:
        """False when this (key, jti) was already recorded: a replayed DPoP proof."""
        values = {"jkt": jkt, "jti": jti, "expires_at": expires_at}
        return self._execute_counting(self.store.insert_dpop_proof, values) > 0

    def status_index(self) -> tuple[int, int] | None:
        """(list id, index): from a block this transaction claimed, else from the process's
        committed blocks; None when neither has one left (claim a block)."""
        for block in self._claimed:
            taken = block.take()
            if taken is not None:
                return taken
        return self.store.status_indexes.take()

    def claim_status_block(self, now: datetime) -> bool:
        """Claim the next block of the open status list for this transaction; False when
        no list is open (add one)."""
        pool = self.store.status_indexes
        row = self._one(self.store.claim_status_block, {"block": pool.block, "now": now})
        if row is None:
            return False
        list_id, next_idx, size = (int(value) for value in row)
        self._claimed.append(
            IndexBlock(list_id, next_idx - pool.block, min(next_idx, size), pool.monotonic())
        )
        return True

    def add_status_list(self, size: int, now: datetime) -> None:
        self._execute(self.store.add_status_list, {"size": size, "next_idx": 0, "created_at": now})

    def record_issued_token(self, values: Mapping[str, Any]) -> None:
        self._execute(self.store.insert_issued_token, values)

    def record_audit(self, values: Mapping[str, Any]) -> None:
        self._execute(self.store.insert_audit, values)

    def commit(self) -> None:
        try:
            if self._pipeline is not None:
                self._run("COMMIT", ())
                self._pipeline.sync()  # raises the first failed statement's error
            else:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("COMMIT")
                self._connection.commit()
        except self.store.dbapi_error as exc:
            raise self._wrap("COMMIT", exc) from exc
        self._committed = True
        self._release_gate()  # after a failure, only once the rollback has run (_close)
        deferred, self._deferred = self._deferred, []
        for cursor, blocks in deferred:  # their results came back with the COMMIT's
            blocks.set(cursor.fetchall())
            cursor.close()
        claimed, self._claimed = self._claimed, []
        for block in claimed:  # committed: what this transaction left is the process's now
            self.store.status_indexes.give(block)

    # ---- savepoints: several pieces of work in one transaction (sts.db.group_commit) ----

    def savepoint(self) -> int:
        """Start a savepoint; the mark to give :meth:`rollback_to_savepoint`."""
        self._run("SAVEPOINT work", ())
        return len(self._claimed)

    def release_savepoint(self) -> None:
        self._run("RELEASE SAVEPOINT work", ())

    def rollback_to_savepoint(self, mark: int) -> None:
        """Undo what ran since :meth:`savepoint`, status-list blocks claimed included."""
        del self._claimed[mark:]
        self._run("ROLLBACK TO SAVEPOINT work", ())
        self._run("RELEASE SAVEPOINT work", ())

    # ---- plumbing --------------------------------------------------------------------

    def _one(self, prepared: Prepared, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rows = self._run(prepared.sql, prepared.params(values), fetch=True)
        return rows[0] if rows else None

    def _all(self, prepared: Prepared, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self._run(prepared.sql, prepared.params(values), fetch=True)

    def _deferred_rows(self, prepared: Prepared, values: Mapping[str, Any]) -> Blocks:
        """A statement whose rows are only needed after COMMIT: in a pipeline, it is
        queued on a cursor of its own and read once the COMMIT's sync has brought its
        results back (no round trip of its own); otherwise read at once."""
        if self._pipeline is None:
            blocks = Blocks()
            blocks.set(self._all(prepared, values))
            return blocks
        cursor = self._cursor.connection.cursor()
        self._deferred.append((cursor, blocks := Blocks()))
        self._run(prepared.sql, prepared.params(values), cursor=cursor)
        return blocks

    def _execute(self, prepared: Prepared, values: Mapping[str, Any]) -> None:
        """A statement whose result nobody reads: in a pipeline, it is only queued."""
        self._run(prepared.sql, prepared.params(values))

    def _execute_counting(self, prepared: Prepared, values: Mapping[str, Any]) -> int:
        """How many rows the statement changed (waits for it, in a pipeline too)."""
        self._run(prepared.sql, prepared.params(values), count=True)
        return int(self._cursor.rowcount)

    def _run(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any],
        *,
        fetch: bool = False,
        count: bool = False,
        cursor: Any = None,
    ) -> list[tuple[Any, ...]]:
        """``sql`` on the transaction's cursor (or on ``cursor``, one whose results are
        read later)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", sql)
        cursor = cursor or self._cursor
        try:
            cursor.execute(sql, params)
            if fetch:  # every row (a RETURNING statement completes on SQLite)
                return [tuple(row) for row in cursor.fetchall()]
            if count and self._pipeline is not None:
                self._pipeline.sync()
        except self.store.dbapi_error as exc:
            raise self._wrap(sql, exc) from exc
        return []

    def _wrap(self, sql: str, exc: Any) -> StatementError:
        """As SQLAlchemy would raise it; a broken connection is dropped from the pool.
        Parameters are left out of the error: they name tokens and subjects."""
        dialect = self.store.engine.dialect
        driver = (
            self._pipelined.driver
            if self._pipelined is not None
            else self._connection.driver_connection
        )
        invalidated = dialect.is_disconnect(exc, driver, self._cursor)
        if invalidated and self._pipelined is not None and self.store.pipelined is not None:
            self.store.pipelined.discard(self._pipelined, broken=True)
            self._pipelined = self._pipeline = None
        elif invalidated:
            self._connection.invalidate(exc)
            if self._dedicated:
                self.store.drop_writer()
                self._connection = None
        error: StatementError = DBAPIError.instance(
            sql,
            None,
            exc,
            self.store.dbapi_error,
            hide_parameters=True,
            connection_invalidated=invalidated,
            dialect=dialect,
        )
        return error

    def _close(self) -> None:
        try:
            if self._pipelined is not None:
                self._end_pipelined_transaction(self._pipelined)
            elif self._dedicated:
                self._end_on_writer()
            elif self._connection is not None:
                # Back to the pool, whose reset-on-return rolls back anything uncommitted.
                self._connection.close()
        finally:
            self._connection = self._cursor = None
            self._deferred = []
            self._release_gate()

    def _end_pipelined_transaction(self, pipelined: PipelinedConnection) -> None:
        """Roll back what did not commit; the connection stays the thread's if that leaves
        it idle, else it is closed. Nothing is raised from here: a statement's own error
        was raised already, and this runs while it propagates."""
        self._pipelined = self._pipeline = None
        with contextlib.suppress(Exception):
            self._cursor.close()
        idle = pipelined.idle() if self._committed else pipelined.roll_back()
        assert self.store.pipelined is not None
        self.store.pipelined.release(pipelined, idle=idle)

    def _end_on_writer(self) -> None:
        """The write connection stays open: roll back what did not commit, or drop it."""
        if self._connection is None or self._committed:
            return
        try:
            self._connection.rollback()
        except self.store.dbapi_error:
            self.store.drop_writer()

    def _release_gate(self) -> None:
        if self._gate_held and self.store.gate is not None:
            self._gate_held = False
            self.store.gate.release()
