"""PostgreSQL: the connection is lost around an exchange's COMMIT, on a real network path
(tests.pgproxy between sts and PostgreSQL). Whether the COMMIT ran or not, sts cannot
know it was durable, so it issues no token (503 ``temporarily_unavailable``, the refusal
audited); either way nothing is lost: a lineage row and its audit record, or neither.
The next exchange succeeds without any intervention (the broken connection is replaced).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from sts.db.models import IssuedToken
from tests.conftest import FixedClock
from tests.integration.test_token_exchange import assert_error
from tests.integration.world import DEPLOY, World
from tests.pgproxy import PostgresProxy, postgres_proxy

pytestmark = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@pytest.fixture
def proxy(empty_database_url: str) -> Iterator[PostgresProxy]:
    url = make_url(empty_database_url)
    with postgres_proxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


@pytest.fixture
def app(empty_database_url: str, make_settings, clock: FixedClock, proxy: PostgresProxy):  # type: ignore[no-untyped-def]
    """The app of every storage test, its database reached through the proxy."""
    from sts.app import create_app

    proxied = make_url(empty_database_url).set(
        host="127.0.0.1", port=proxy.port, query={"sslmode": "disable", "gssencmode": "disable"}
    )
    url = proxied.render_as_string(hide_password=False)
    application = create_app(make_settings(url), clock=clock)
    yield application
    application.extensions["sts"].engine.dispose()


def exchange_records(world: World) -> tuple[int, list[dict[str, Any]]]:
    """Lineage rows, and the exchange's audit records (allowed or refused)."""
    audit = [row for row in world.audit_rows() if row["event"] == "token_exchange"]
    return world.count(IssuedToken), audit


def lose_the_connection(world: World, proxy: PostgresProxy, when: str) -> dict[str, Any]:
    # A first exchange opens this thread's own connection (sts.db.pipelined).
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    proxy.arm(when)
    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    assert proxy.fired.is_set(), "the proxy saw no exchange's COMMIT"
    body = assert_error(refused, 503, "temporarily_unavailable")
    assert "durable" not in body["error_description"]  # says nothing of the database
    return body


def test_lost_before_the_commit_reached_the_server_nothing_is_recorded_and_no_token(
    world: World, proxy: PostgresProxy
) -> None:
    lineage, audit = exchange_records(world)
    lose_the_connection(world, proxy, "before")
    after, audit_after = exchange_records(world)
    assert after == lineage + 1  # the first exchange's row only: rolled back
    assert [row["decision"] for row in audit_after[len(audit) :]] == ["allow", "deny"]
    assert audit_after[-1]["reason"] == "database.unavailable"

    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert world.count(IssuedToken) == lineage + 2


def test_lost_after_the_commit_ran_the_rows_are_kept_and_no_token(
    world: World, proxy: PostgresProxy
) -> None:
    """The COMMIT ran and only its acknowledgement was lost: the lineage row and its
    audit record are on record, for a token nobody holds; the refusal is audited too."""
    lineage, audit = exchange_records(world)
    lose_the_connection(world, proxy, "after")
    after, audit_after = exchange_records(world)
    assert after == lineage + 2  # both exchanges' rows: the second did commit
    assert [row["decision"] for row in audit_after[len(audit) :]] == ["allow", "allow", "deny"]
    assert audit_after[-1]["reason"] == "database.unavailable"

    # Recovers by itself; the lost transaction's status-list index is not handed out again
    # (its row holds it: a reuse would be refused by the unique index).
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert world.count(IssuedToken) == lineage + 3
