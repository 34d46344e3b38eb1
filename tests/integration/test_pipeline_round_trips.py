"""PostgreSQL: an exchange's transaction is pipelined, with its own BEGIN and COMMIT, on a
connection switched to autocommit for the transaction (sts.db.exchange_store). What the
client sent is read from libpq's protocol trace; how the connection goes back to the pool
from its state there."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg.pq import Trace, TransactionStatus
from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError

from tests.integration.test_record_unless_blocked import lineage, record, store_of
from tests.integration.world import DEPLOY, World

pytestmark = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@contextmanager
def protocol_trace(engine: Engine) -> Iterator[list[str]]:
    """The frontend messages (type, first word) sent on connections checked out inside."""
    messages: list[str] = []
    with tempfile.TemporaryFile() as trace:

        def start(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            dbapi_connection.pgconn.trace(trace.fileno())
            dbapi_connection.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

        def stop(dbapi_connection: Any, _record: Any) -> None:
            if dbapi_connection is not None:
                dbapi_connection.pgconn.untrace()

        event.listen(engine, "checkout", start)
        event.listen(engine, "checkin", stop)
        try:
            yield messages
        finally:
            event.remove(engine, "checkout", start)
            event.remove(engine, "checkin", stop)
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
    engine = world.app.extensions["sts"].engine
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200  # warm
    with protocol_trace(engine) as sent:
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    # Statements go out without waiting; the only wait is the one Sync at the end (no
    # simple Query: no ping, no BEGIN or COMMIT of psycopg's, each of which would sync).
    assert [m for m in sent if m.startswith("Parse")] == [
        "Parse BEGIN",
        "Parse SELECT",  # the signing-key lock, shared
        "Parse WITH",  # the block check, the lineage row and the audit row
        "Parse COMMIT",
    ]
    assert sent.count("Sync") == 1
    assert not [m for m in sent if m.startswith("Query")]


def pooled(engine: Engine) -> list[tuple[int, bool, TransactionStatus]]:
    """(backend pid, autocommit, transaction status) of each connection in the pool."""
    connections = [engine.raw_connection() for _ in range(engine.pool.checkedin())]  # type: ignore[attr-defined]
    try:
        return sorted(
            (info.backend_pid, c.driver_connection.autocommit, info.transaction_status)
            for c in connections
            for info in [c.driver_connection.info]
        )
    finally:
        for connection in connections:
            connection.close()


def test_connections_go_back_to_the_pool_as_they_came(world: World) -> None:
    engine = world.app.extensions["sts"].engine
    store = store_of(world)
    record(world, "jti-once")  # committed
    before = pooled(engine)
    assert before and all(state[1:] == (False, TransactionStatus.IDLE) for state in before)

    with pytest.raises(IntegrityError):
        record(world, "jti-once")  # failed in the pipeline: aborted, then rolled back
    with store.write() as transaction:  # never committed: rolled back at the end
        transaction.hold_signing_keys_shared()
    with store.read() as transaction:
        assert transaction.parent_revocation_state("jti-once") == (True, False)

    # The same connections (none dropped and replaced), idle and not in autocommit.
    assert pooled(engine) == before


def test_an_error_seen_at_a_later_statement_is_the_one_raised(world: World) -> None:
    """A queued statement fails; its error reaches the client while a later statement is
    sent, or at the sync. Either way that error is what the caller gets (not one from the
    clean-up), and the connection goes back to the pool as it came."""
    engine = world.app.extensions["sts"].engine
    store = store_of(world)
    record(world, "jti-once")
    before = pooled(engine)

    with pytest.raises(IntegrityError), store.write() as transaction:
        transaction.record_issued_token(lineage(world, "jti-once"))  # queued: a duplicate
        time.sleep(0.05)  # its error is back on the socket by now
        transaction.hold_signing_keys_shared()  # the next statement meets it
        transaction.commit()

    assert pooled(engine) == before
