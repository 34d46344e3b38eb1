"""On SQLite each process writes through one connection, kept from one exchange to the
next behind the write gate (``ExchangeStore.writer``): no pool checkout per exchange, and a
page cache that only another process's commits invalidate."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select

from sts.db.models import StatusList
from tests.integration.world import DEPLOY, World

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


def status_lists(world: World) -> int:
    with world.app.extensions["sts"].session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(StatusList)) or 0)


def test_the_exchanges_of_a_process_write_through_one_kept_connection(world: World) -> None:
    store = world.app.extensions["sts"].exchange_store
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    kept = store.writer()
    for _ in range(3):
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert store.writer() is kept


def test_what_did_not_commit_is_rolled_back_on_the_kept_connection(world: World) -> None:
    store = world.app.extensions["sts"].exchange_store
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    kept, before = store.writer(), status_lists(world)
    with pytest.raises(RuntimeError, match="refused halfway"), store.write() as transaction:
        transaction.add_status_list(8, world.clock())
        raise RuntimeError("refused halfway")
    assert status_lists(world) == before
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert store.writer() is kept


def test_a_forked_child_writes_through_its_own_connection(world: World) -> None:
    store = world.app.extensions["sts"].exchange_store
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    parents, before = store.writer(), status_lists(world)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one write transaction, then report and leave without cleanup
        try:
            with store.write() as transaction:
                transaction.add_status_list(8, world.clock())
                transaction.commit()
            os.write(write, b"own" if store.writer() is not parents else b"shared")
        except BaseException as exc:  # reported to the parent below
            os.write(write, repr(exc).encode()[:200])
        finally:
            os._exit(0)
    os.close(write)
    reported = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert reported == "own"
    assert status_lists(world) == before + 1  # the child's commit is in the database
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert store.writer() is parents


def test_the_engines_end_closes_the_kept_connection(world: World) -> None:
    services = world.app.extensions["sts"]
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    kept = services.exchange_store.writer()
    services.engine.dispose()
    assert kept.dbapi_connection is None  # closed, not merely forgotten
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    assert services.exchange_store.writer() is not kept
