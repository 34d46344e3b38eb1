"""What revocation adds to the exchange's transaction: one query on ``revocations`` for
every identity involved, and a status index taken from the process's claimed block (no
statement on ``status_lists`` once the block is claimed)."""

from __future__ import annotations

import logging

import pytest

from tests.integration.world import DEPLOY, PROJECT, World


def test_one_revocations_query_per_exchange(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.exchange(world.ci_token(), audience=DEPLOY)  # warm the caches, claim a block
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
        assert [s for s in seen if "status_lists" in s] == []
