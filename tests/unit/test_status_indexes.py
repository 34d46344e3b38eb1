"""The process's pool of claimed status-list index blocks (sts.db.status_indexes)."""

from __future__ import annotations

import pytest

from sts.db.status_indexes import IndexBlock, StatusIndexPool
from tests.forking import in_forked_child


def test_indexes_come_from_the_oldest_block_first_and_each_once() -> None:
    pool = StatusIndexPool(4, monotonic=lambda: 0.0)
    pool.give(IndexBlock(1, 2, 4, 0.0))
    pool.give(IndexBlock(1, 8, 10, 0.0))
    assert [pool.take() for _ in range(5)] == [(1, 2), (1, 3), (1, 8), (1, 9), None]


def test_a_used_up_block_is_not_kept() -> None:
    pool = StatusIndexPool(4, monotonic=lambda: 0.0)
    pool.give(IndexBlock(1, 4, 4, 0.0))
    assert pool.take() is None


def test_blocks_older_than_the_maximum_age_are_dropped() -> None:
    now = [100.0]
    pool = StatusIndexPool(4, max_age=60, monotonic=lambda: now[0])
    pool.give(IndexBlock(1, 0, 4, 100.0))
    pool.give(IndexBlock(2, 0, 4, 150.0))
    assert pool.take() == (1, 0)
    now[0] = 160.0 + 0.5  # block 1 is 60.5 s old, block 2 10.5 s
    assert pool.take() == (2, 0)
    now[0] = 210.0  # block 2 is exactly 60 s old: still used
    assert pool.take() == (2, 1)
    now[0] = 210.5
    assert pool.take() is None


def test_a_forked_child_never_uses_its_parents_blocks() -> None:
    pool = StatusIndexPool(4, monotonic=lambda: 0.0)
    pool.give(IndexBlock(1, 0, 4, 0.0))
    reported = in_forked_child(lambda: repr(pool.take()))
    assert reported == "None"
    assert pool.take() == (1, 0)  # the parent still holds its block


def test_a_block_must_hold_an_index() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StatusIndexPool(0)
