"""Status-list indexes claimed in blocks, so exchanges do not queue on one counter row.

Every issued token needs its own entry in a Token Status List (draft-ietf-oauth-status-
list). Advancing ``status_lists.next_idx`` by one per exchange made that row the hottest
lock in the database: on PostgreSQL each exchange held it from its ``UPDATE`` to its
``COMMIT`` (WAL flush included), so every other exchange queued behind it
(``python -m bench``: a third of the backends waited on ``Lock:transactionid``).

Instead, an exchange that finds no free index claims a BLOCK of ``block`` indexes in its
own transaction. The block becomes this process's only once that transaction has
committed (before, a rollback could hand the same indexes to someone else); the next
exchanges of the process take indexes from it without touching the row. Like a cached
database sequence:

* two processes never get overlapping blocks (the claim is one ``UPDATE`` of the row);
* indexes of a block that are never used (the process exits, or the block ages out) stay
  0 = valid in the published list and are referenced by no token: harmless, and bounded
  by ``block`` per process start or quiet period;
* a block is used for at most :data:`BLOCK_MAX_AGE` seconds after its claim, and a full
  list is retired only once its last claim is older than ``RETIRE_AFTER_LAST_CLAIM``
  (``sts.db.queries``): no token can ever point into a list that is no longer served;
* a process that forks drops its parent's blocks (the child would share them).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Seconds a claimed block is used after its claim (process clock). Far below the quiet
# period after the last claim that a full list must have before it is retired.
BLOCK_MAX_AGE = 60.0


@dataclass
class IndexBlock:
    """Indexes ``next``..``end - 1`` of status list ``list_id``, claimed at ``claimed_at``
    (monotonic seconds)."""

    list_id: int
    next: int
    end: int
    claimed_at: float

    def take(self) -> tuple[int, int] | None:
        if self.next >= self.end:
            return None
        idx, self.next = self.next, self.next + 1
        return self.list_id, idx


class StatusIndexPool:
    """This process's committed, unused blocks of one database (thread-safe)."""

    def __init__(
        self,
        block: int,
        *,
        max_age: float = BLOCK_MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.block = block
        self.max_age = max_age
        self.monotonic = monotonic
        self._blocks: deque[IndexBlock] = deque()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> tuple[int, int] | None:
        """(list id, index) from the oldest block young enough, or None."""
        with self._lock:
            self._forget_after_fork()
            oldest_allowed = self.monotonic() - self.max_age
            while self._blocks:
                block = self._blocks[0]
                taken = block.take() if block.claimed_at >= oldest_allowed else None
                if taken is not None:
                    return taken
                self._blocks.popleft()  # used up or too old: its remaining indexes stay unused
            return None

    def give(self, block: IndexBlock) -> None:
        """A block whose claim has committed, with what this transaction left of it."""
        if block.next >= block.end:
            return
        with self._lock:
            self._forget_after_fork()
            self._blocks.append(block)

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._blocks.clear()
            self._pid = os.getpid()
