"""Group commit on SQLite: the writes that a process's threads have ready at the same time
share one transaction and one COMMIT.

Why: a SQLite commit appends every b-tree page it changed to the WAL (an exchange changes
about 11: the lineage table and its indexes, the audit table and its indexes), and each
commit empties the page cache of every other process's connection, which then reads those
pages back. Exchanges that commit together write the pages they share once (jtis and
times only grow, so they share the right edge of every index) and pay the gate, BEGIN,
COMMIT and the other process's cache refill once.

How (the "flat combining" pattern): a thread with a write to run queues it. If no thread
of this process is leading, it leads: it opens the write transaction (waiting at the
write gate while another process writes, during which more work queues up), takes the
queue, runs each piece of work in that one transaction inside its own SAVEPOINT, so that
a refusal rolls back its own writes only, commits, and wakes the waiting threads with
their results. Work queued meanwhile is led by the first of it, next. A batch of one runs
without a savepoint: exactly the transaction of before.

The promise is unchanged: the caller gets its result (and signs a token) only after the
COMMIT holding its writes has returned; if that COMMIT fails, every piece of work in the
batch fails with the error.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from sts.db.exchange_store import ExchangeTransaction

T = TypeVar("T")
Work = Callable[["ExchangeTransaction"], T]

# Bounds the wait of the last thread of a batch (each exchange holds the transaction
# ~0.1 ms); far above what a process's request threads can queue.
MAX_BATCH = 32


class _Pending(Generic[T]):
    """One thread's work, and what became of it."""

    __slots__ = ("error", "leads", "result", "woken", "work")

    def __init__(self, work: Work[T]) -> None:
        self.work = work
        # Only a thread that waits needs one (made while queueing): a lone exchange, the
        # common case, never creates or sets an Event.
        self.woken: threading.Event | None = None
        self.leads = False  # woken to lead the next batch, not with a result
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Runs work in write transactions opened by ``begin``, batching concurrent work."""

    def __init__(self, begin: Callable[[], ExchangeTransaction], max_batch: int = MAX_BATCH):
        self._begin = begin
        self.max_batch = max_batch
        self.batches = 0  # transactions led, and pieces of work run in them (tests, bench)
        self.works = 0
        self._reset()
        _INSTANCES.add(self)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._queue: deque[_Pending[Any]] = deque()
        self._leading = False
        self._leader: int | None = None

    def run(self, work: Work[T]) -> T:
        """``work(transaction)``, committed; its result once the COMMIT has returned. An
        exception from ``work`` (its writes rolled back) or from the transaction is raised
        here, in the calling thread."""
        if self._leader == threading.get_ident():
            # The leader would wait for itself: a write inside a write is a bug.
            raise RuntimeError("nested write transaction on one thread")
        pending: _Pending[T] = _Pending(work)
        with self._mutex:
            self._queue.append(pending)
            leads = not self._leading
            if not leads:
                pending.woken = threading.Event()
            self._leading = True
        if pending.woken is not None:
            pending.woken.wait()
            if not pending.leads:
                return pending.outcome()
        self._lead()
        return pending.outcome()

    def _lead(self) -> None:
        self._leader = threading.get_ident()
        batch: list[_Pending[Any]] = []
        try:
            with self._begin() as transaction:
                batch = self._take_batch()
                if self._run_batch(transaction, batch):
                    transaction.commit()
        except BaseException as exc:
            # BEGIN, a SAVEPOINT statement or the COMMIT failed: nothing of the batch is
            # committed. Work that failed by itself keeps its own error.
            batch = batch or self._take_batch()
            for pending in batch:
                if pending.error is None:
                    pending.error, pending.result = exc, None
        finally:
            self._leader = None
            self.batches += 1
            self.works += len(batch)
            with self._mutex:
                if self._queue:
                    successor = self._queue[0]  # queued while this one led: it waits
                    successor.leads = True
                    assert successor.woken is not None
                    successor.woken.set()
                else:
                    self._leading = False
            for pending in batch:
                if pending.woken is not None:
                    pending.woken.set()

    def _take_batch(self) -> list[_Pending[Any]]:
        with self._mutex:
            return [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]

    @staticmethod
    def _run_batch(transaction: ExchangeTransaction, batch: list[_Pending[Any]]) -> bool:
        """Run the batch's work; True when some of it is left to commit."""
        if len(batch) == 1:  # no savepoint needed: its failure rolls the transaction back
            pending = batch[0]
            try:
                pending.result = pending.work(transaction)
            except Exception as exc:
                pending.error = exc
                return False
            return True
        to_commit = False
        for pending in batch:
            mark = transaction.savepoint()
            try:
                pending.result = pending.work(transaction)
            except Exception as exc:
                pending.error = exc
                transaction.rollback_to_savepoint(mark)
            else:
                transaction.release_savepoint()
                to_commit = True
        return to_commit


# Threads do not survive fork: a child starts with no leader and an empty queue, whatever
# the parent's threads were doing at the time.
_INSTANCES: weakref.WeakSet[GroupCommit] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for instance in list(_INSTANCES):
        instance._reset()


os.register_at_fork(after_in_child=_reset_after_fork)
