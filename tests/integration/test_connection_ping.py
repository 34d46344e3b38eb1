"""PostgreSQL: a pooled connection is pinged on checkout only when it may be stale
(sts.db.engine.StaleConnectionPing): idle for longer than the window, or used before some
connection of the pool was found broken. What the server ran is read from
``pg_stat_activity``, so each test sees whether a ping reached it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from sts.db.engine import make_engine
from sts.db.models import AuditRecord, IssuedToken
from tests.integration.test_token_exchange import assert_error
from tests.integration.world import DEPLOY, World

pytestmark = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)

PING = ";"  # what SQLAlchemy's psycopg dialect sends as a ping
# Long enough that "used a moment ago" holds on a loaded machine, short for the suite.
WINDOW = 1.0


@pytest.fixture
def admin(empty_database_url: str) -> Iterator[Engine]:
    url = make_url(empty_database_url).set(database="postgres")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def last_query(admin: Engine, pid: int) -> str:
    with admin.connect() as connection:
        query = connection.execute(
            text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one()
    return str(query)


def terminate(admin: Engine, database: str) -> None:
    """End every session on ``database`` and wait until each has gone (PostgreSQL 14+)."""
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": database},
        )


@contextmanager
def pool_with_window(url: str, window: float, size: int = 1) -> Iterator[Engine]:
    """An engine as sts makes it, with this ping window and a pool of ``size``."""
    engine = make_engine(url, ping_idle_after=window, pool_size=size, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


def database_of(url: str) -> str:
    return make_url(url).database or ""


def backend_pid(connection: Any) -> int:
    cursor = connection.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    pid = int(cursor.fetchone()[0])
    cursor.close()
    return pid


def pooled_backend(engine: Engine) -> int:
    """The backend pid of a connection the pool hands out, which goes back at once (the
    pool's reset rolls back)."""
    connection = engine.raw_connection()
    pid = backend_pid(connection)
    connection.close()
    return pid


def test_a_recently_used_connection_is_not_pinged_an_idle_one_is(
    empty_database_url: str, admin: Engine
) -> None:
    with pool_with_window(empty_database_url, WINDOW) as engine:
        pid = pooled_backend(engine)
        assert last_query(admin, pid) == "ROLLBACK"

        connection = engine.raw_connection()  # used a moment ago: straight to work
        assert last_query(admin, pid) == "ROLLBACK"
        connection.close()

        time.sleep(WINDOW + 0.1)
        connection = engine.raw_connection()  # idle past the window: pinged first
        assert last_query(admin, pid) == PING
        assert backend_pid(connection) == pid  # the same connection: it was alive
        connection.close()


def test_an_idle_connection_whose_server_went_away_is_replaced_on_checkout(
    empty_database_url: str, admin: Engine
) -> None:
    with pool_with_window(empty_database_url, WINDOW) as engine:
        old = pooled_backend(engine)
        terminate(admin, database_of(empty_database_url))
        time.sleep(WINDOW + 0.1)
        connection = engine.raw_connection()  # pinged, found dead, replaced
        assert backend_pid(connection) != old
        connection.close()


def test_a_connection_found_broken_gets_every_older_one_pinged(
    empty_database_url: str, admin: Engine
) -> None:
    # A window far longer than the test: only the broken connection can cause a ping.
    with pool_with_window(empty_database_url, 60, size=2) as engine:
        first, second = engine.raw_connection(), engine.raw_connection()
        old = {backend_pid(first), backend_pid(second)}
        first.close()
        second.close()
        terminate(admin, database_of(empty_database_url))

        broken = engine.raw_connection()  # used a moment ago: not pinged, and dead
        with pytest.raises(psycopg.OperationalError) as failure:
            backend_pid(broken)
        broken.invalidate(failure.value)  # as the exchange does with a disconnect
        broken.close()

        other = engine.raw_connection()  # used before the break: pinged, replaced
        assert backend_pid(other) not in old
        other.close()


def test_a_server_gone_since_the_last_exchange_refuses_one_exchange_then_recovers(
    world: World, empty_database_url: str, admin: Engine
) -> None:
    """The trade-off of not pinging every checkout: a connection whose server went away
    and came back within the window is found broken by the exchange that uses it. That
    one is refused (503, no token) and its refusal is still audited; the next succeeds."""
    services = world.app.extensions["sts"]
    services.engine.dispose()  # one pooled connection from here on (requests run in turn)
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    tokens_before = world.count(IssuedToken)
    terminate(admin, database_of(empty_database_url))

    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    body = assert_error(refused, 503, "temporarily_unavailable")
    assert "access_token" not in body
    assert world.audit_rows()[-1]["reason"] == "database.unavailable"

    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert world.count(IssuedToken) == tokens_before + 1
    assert world.count(AuditRecord) >= 3


def test_a_replayed_proof_during_a_database_failure_is_answered_as_the_failure(
    world: World, empty_database_url: str, admin: Engine
) -> None:
    """A database failure keeps its 503, even when the refusal's record then finds the
    DPoP proof on record: the failed transaction may have committed this very proof before
    its acknowledgement was lost, so "replay" could be false. The row says the jti was on
    record."""
    from joserfc.jwk import ECKey

    from tests.integration.test_dpop import make_proof

    services = world.app.extensions["sts"]
    services.engine.dispose()  # one pooled connection from here on (requests run in turn)
    proof = make_proof(world, ECKey.generate_key("P-256"))
    headers = {"DPoP": proof}
    assert world.exchange(world.ci_token(), audience=DEPLOY, headers=headers).status_code == 200
    terminate(admin, database_of(empty_database_url))

    refused = world.exchange(world.ci_token(), audience=DEPLOY, headers=headers)
    assert_error(refused, 503, "temporarily_unavailable")
    row = world.audit_rows()[-1]
    assert row["reason"] == "database.unavailable"
    assert row["detail"].endswith("; the DPoP proof's jti was on record")
