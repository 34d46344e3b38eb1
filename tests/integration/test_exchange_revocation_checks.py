"""What revocation adds to the exchange's transaction: one query on ``revocations`` for
every identity involved, and one status index allocation."""

from __future__ import annotations

import logging

import pytest

from tests.integration.world import DEPLOY, PROJECT, World


def test_one_revocations_query_per_exchange(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.exchange(world.ci_token(), audience=DEPLOY)  # warm the caches
    for exchange in (
        lambda: world.exchange(world.ci_token(), audience=DEPLOY),
        lambda: world.agent_exchange(world.agent_token(), audience=PROJECT),
    ):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="sts.db.exchange_store"):
            assert exchange().status_code == 200
        seen = [record.getMessage() for record in caplog.records]
        on_revocations = [s for s in seen if "FROM revocations" in s]
        assert len(on_revocations) == 1, on_revocations
        assert len([s for s in seen if "UPDATE status_lists" in s]) == 1


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_sqlite_wal_is_checkpointed_outside_the_write_lock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoint runs inside the commit that crosses its threshold, holding
    the write gate; sts raises that threshold to a backstop and checkpoints every
    CHECKPOINT_EVERY commits after the gate is released, so the WAL stays short."""
    import sts.db.exchange_store
    from sts.db.engine import WAL_AUTOCHECKPOINT_BACKSTOP

    engine = world.app.extensions["sts"].engine

    def wal_frames_after(exchanges: int, every: int) -> int:
        monkeypatch.setattr(sts.db.exchange_store, "CHECKPOINT_EVERY", every)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()  # empty WAL
        for _ in range(exchanges):
            assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
        with engine.connect() as connection:
            # (busy, frames in the WAL, frames checkpointed)
            return int(connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()[1])

    with engine.connect() as connection:
        backstop = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert backstop == WAL_AUTOCHECKPOINT_BACKSTOP
    world.exchange(world.ci_token(), audience=DEPLOY)  # warm up
    never = wal_frames_after(30, every=10**9)  # 30 exchanges' pages, none checkpointed
    often = wal_frames_after(35, every=10)  # at most the last 10 exchanges' pages
    assert 0 < often < never / 2, (often, never)
