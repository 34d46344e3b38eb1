"""PostgreSQL: an exchange's transaction is pipelined, with its own BEGIN and COMMIT, on
the thread's own connection, kept in autocommit and pipeline mode between transactions
(sts.db.pipelined). What the client sent is read from libpq's protocol trace; what a
failure leaves behind from the connection's state."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from psycopg.pq import PipelineStatus, Trace, TransactionStatus
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from sts.db.pipelined import PipelinedConnection
from tests.integration.test_record_unless_blocked import lineage, record, store_of
from tests.integration.world import DEPLOY, World

pytestmark = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


def this_threads_connection(world: World) -> PipelinedConnection:
    """The connection this thread's exchanges run on (the test client serves a request on
    the calling thread)."""
    pipelined = store_of(world).pipelined
    assert pipelined is not None
    return pipelined.acquire()


@contextmanager
def protocol_trace(connection: PipelinedConnection) -> Iterator[list[str]]:
    """The frontend messages (type, first word) sent on ``connection`` inside."""
    messages: list[str] = []
    with tempfile.TemporaryFile() as trace:
        pgconn = connection.driver.pgconn
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            yield messages
        finally:
            pgconn.untrace()
            trace.seek(0)
            for line in trace.read().decode().splitlines():
                if not line.startswith("F\t"):
                    continue  # the server's messages, or a statement's next line
                _direction, _length, kind, *rest = line.split("\t")
                if kind:
                    words = rest[0].split('"') if rest else []
                    statement = words[3].split()[0] if kind == "Parse" and len(words) > 3 else ""
                    messages.append(f"{kind} {statement}".strip())


def test_an_exchange_from_an_external_jwt_is_one_round_trip(world: World) -> None:
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200  # warm
    with protocol_trace(this_threads_connection(world)) as sent:
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    # Statements go out without waiting; the only wait is the one Sync at the end (no
    # simple Query: no ping, no BEGIN or COMMIT of psycopg's, each of which would sync).
    assert [m for m in sent if m.startswith("Parse")] == [
        "Parse BEGIN",
        "Parse SELECT",  # the governance lock, shared
        "Parse WITH",  # the block check, the lineage row and the audit row
        "Parse COMMIT",
    ]
    assert sent.count("Sync") == 1
    assert not [m for m in sent if m.startswith("Query")]


def state(connection: PipelinedConnection) -> tuple[int, bool, PipelineStatus, TransactionStatus]:
    """(backend pid, autocommit, pipeline status, transaction status)."""
    driver = connection.driver
    return (
        driver.info.backend_pid,
        driver.autocommit,
        driver.pgconn.pipeline_status,
        driver.info.transaction_status,
    )


READY = (True, PipelineStatus.ON, TransactionStatus.IDLE)


def pooled(engine: Engine) -> list[tuple[bool, TransactionStatus]]:
    """(autocommit, transaction status) of each connection in the pool."""
    connections = [engine.raw_connection() for _ in range(engine.pool.checkedin())]  # type: ignore[attr-defined]
    try:
        return [
            (c.driver_connection.autocommit, c.driver_connection.info.transaction_status)
            for c in connections
        ]
    finally:
        for connection in connections:
            connection.close()


def test_the_threads_connection_stays_ready_after_failures(world: World) -> None:
    store = store_of(world)
    record(world, "jti-once")  # committed
    connection = this_threads_connection(world)
    before = state(connection)
    assert before[1:] == READY

    with pytest.raises(IntegrityError):
        record(world, "jti-once")  # failed in the pipeline: aborted, then rolled back
    with store.write() as transaction:  # never committed: rolled back at the end
        transaction.hold_governance_shared()
    with store.read() as transaction:
        assert transaction.parent_revocation_state("jti-once") == (True, False)

    # The same connection (not dropped and replaced), ready for the next transaction; the
    # pool never sees a connection in autocommit or pipeline mode.
    assert this_threads_connection(world) is connection
    assert state(connection) == before
    engine = world.app.extensions["sts"].engine
    assert all(entry == (False, TransactionStatus.IDLE) for entry in pooled(engine))


def test_an_error_seen_at_a_later_statement_is_the_one_raised(world: World) -> None:
    """A queued statement fails; its error reaches the client while a later statement is
    sent, or at the sync. Either way that error is what the caller gets (not one from the
    clean-up), and the connection is ready again."""
    store = store_of(world)
    record(world, "jti-once")
    connection = this_threads_connection(world)
    before = state(connection)

    with pytest.raises(IntegrityError), store.write() as transaction:
        transaction.record_issued_token(lineage(world, "jti-once"))  # queued: a duplicate
        time.sleep(0.05)  # its error is back on the socket by now
        transaction.hold_governance_shared()  # the next statement meets it
        transaction.commit()

    assert this_threads_connection(world) is connection
    assert state(connection) == before


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(world: World) -> None:
    """Idle past the ping window, the thread's connection is pinged before its next
    transaction; if its server session is gone, another is opened and the exchange
    succeeds (no refusal)."""
    from sqlalchemy import text

    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    pipelined = store_of(world).pipelined
    assert pipelined is not None
    connection = this_threads_connection(world)
    old_pid = connection.driver.info.backend_pid
    with world.app.extensions["sts"].engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
    connection.used_at -= pipelined.ping.idle_after + 1  # as if idle past the window
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    replacement = this_threads_connection(world)
    assert replacement is not connection
    assert replacement.driver.info.backend_pid != old_pid
    assert state(replacement)[1:] == READY


def test_disposing_the_engine_closes_the_threads_connection(world: World) -> None:
    connection = this_threads_connection(world)
    world.app.extensions["sts"].engine.dispose()
    assert connection.driver.closed
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert this_threads_connection(world) is not connection


def test_a_threads_connection_is_closed_when_the_thread_ends(world: World) -> None:
    import gc
    import threading

    store = store_of(world)
    assert store.pipelined is not None
    pipelined = store.pipelined
    used: list[PipelinedConnection] = []

    def one_transaction() -> None:
        with store.read() as transaction:
            assert transaction.parent_revocation_state("unknown") == (False, False)
        used.append(pipelined.acquire())

    thread = threading.Thread(target=one_transaction)
    thread.start()
    thread.join()
    gc.collect()
    assert used and used[0] is not this_threads_connection(world)
    assert used[0].driver.closed


def test_a_threads_connection_is_replaced_after_the_recycle_time(world: World) -> None:
    from sts.db.engine import RECYCLE_AFTER

    connection = this_threads_connection(world)
    connection.opened_at -= RECYCLE_AFTER + 1
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert connection.driver.closed
    replacement = this_threads_connection(world)
    assert replacement is not connection
    assert state(replacement)[1:] == READY
