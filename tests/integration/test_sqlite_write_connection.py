"""On SQLite each process writes through one connection, kept from one exchange to the
next behind the write gate (``ExchangeStore.writer``): no pool checkout per exchange, and a
page cache that only another process's commits invalidate."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from sqlalchemy import func, select

from sts.cli.serve import _forget_inherited_connections
from sts.db.models import StatusList
from tests.forking import in_forked_child
from tests.integration.world import DEPLOY, World

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


def writer_after_an_exchange(world: World) -> Any:
    """The process's write connection, once an exchange has opened it."""
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    return world.app.extensions["sts"].exchange_store.writer()


def status_lists(world: World) -> int:
    with world.app.extensions["sts"].session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(StatusList)) or 0)


def test_the_exchanges_of_a_process_write_through_one_kept_connection(world: World) -> None:
    store = world.app.extensions["sts"].exchange_store
    kept = writer_after_an_exchange(world)
    for _ in range(3):
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert store.writer() is kept


def test_what_did_not_commit_is_rolled_back_on_the_kept_connection(world: World) -> None:
    store = world.app.extensions["sts"].exchange_store
    kept, before = writer_after_an_exchange(world), status_lists(world)
    with pytest.raises(RuntimeError, match="refused halfway"), store.write() as transaction:
        transaction.add_status_list(8, world.clock())
        raise RuntimeError("refused halfway")
    assert status_lists(world) == before
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert store.writer() is kept


def test_a_forked_child_writes_through_its_own_connection(world: World) -> None:
    store = world.app.extensions["sts"].exchange_store
    parents, before = writer_after_an_exchange(world), status_lists(world)

    def write_once() -> str:  # in the child
        with store.write() as transaction:
            transaction.add_status_list(8, world.clock())
            transaction.commit()
        return "own" if store.writer() is not parents else "shared"

    reported = in_forked_child(write_once)
    assert reported == "own"
    assert status_lists(world) == before + 1  # the child's commit is in the database
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert store.writer() is parents


def test_the_engines_end_closes_the_kept_connection(world: World) -> None:
    services = world.app.extensions["sts"]
    kept = writer_after_an_exchange(world)
    services.engine.dispose()
    assert kept.dbapi_connection is None  # closed, not merely forgotten
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert services.exchange_store.writer() is not kept


def test_a_worker_forgetting_its_inherited_connections_keeps_the_parents_writer(
    world: World,
) -> None:
    """A new worker disposes the engine it inherited (sts.cli.serve): the parent's write
    connection is set aside there, neither used nor closed (SQLite connections do not
    cross a fork), and the child opens its own."""
    store = world.app.extensions["sts"].exchange_store
    parents = writer_after_an_exchange(world)

    def forget_then_write() -> str:  # in the child
        _forget_inherited_connections(world.app)
        gc.collect()
        kept = any(connection is parents for connection in store._inherited)
        open_here = parents.dbapi_connection is not None
        with store.write() as transaction:
            transaction.add_status_list(8, world.clock())
            transaction.commit()
        return f"kept={kept} open={open_here} own={store.writer() is not parents}"

    assert in_forked_child(forget_then_write) == "kept=True open=True own=True"
    assert store.writer() is parents
