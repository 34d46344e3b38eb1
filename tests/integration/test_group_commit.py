"""Writes run through ``ExchangeStore.run_write``: committed before the caller gets its
result. On a SQLite file the writes that a process's threads have ready at the same time
share one transaction and one COMMIT (sts.db.group_commit), each in its own savepoint.

To make a batch happen on purpose, the test holds the write gate (as another process's
writer would) while the threads queue their work behind it, then lets it go."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from sts.audit import AuditEntry
from sts.db.exchange_store import ExchangeStore, ExchangeTransaction
from sts.db.models import AuditRecord, IssuedToken, StatusList
from tests.forking import in_forked_child
from tests.integration.world import DEPLOY, World, claims_of

sqlite_only = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


def store_of(world: World) -> ExchangeStore:
    store: ExchangeStore = world.app.extensions["sts"].exchange_store
    return store


def audited(world: World, reason: str) -> Callable[[ExchangeTransaction], str]:
    """Work that writes one audit row with this reason and returns the reason."""

    def work(transaction: ExchangeTransaction) -> str:
        transaction.record_audit(AuditEntry(at=world.clock(), reason=reason).values())
        return reason

    return work


def refused_after_writing(world: World, reason: str) -> Callable[[ExchangeTransaction], str]:
    def work(transaction: ExchangeTransaction) -> str:
        audited(world, reason)(transaction)
        raise ValueError(f"{reason} refused")

    return work


def reasons_on_record(world: World) -> set[str]:
    with world.app.extensions["sts"].session_factory() as session:
        return set(session.scalars(select(AuditRecord.reason)).all())


def run_in_threads(
    store: ExchangeStore, works: list[Callable[[ExchangeTransaction], Any]]
) -> list[Any]:
    """Each work through run_write on its own thread; what each returned or raised."""
    outcomes: list[Any] = [None] * len(works)

    def call(index: int) -> None:
        try:
            outcomes[index] = store.run_write(works[index])
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@contextmanager
def gate_held_until_queued(store: ExchangeStore, queued: int) -> Iterator[None]:
    """Hold the write gate (as another writer would) until ``queued`` works wait behind it."""
    assert store.gate is not None and store.group_commit is not None
    group_commit = store.group_commit
    store.gate.acquire()
    released = False

    def release_when_queued() -> None:
        nonlocal released
        wait_until(lambda: len(group_commit._queue) >= queued)
        released = True
        store.gate.release()  # type: ignore[union-attr]

    releaser = threading.Thread(target=release_when_queued)
    releaser.start()
    try:
        yield
    finally:
        releaser.join(10)
        if not released:
            store.gate.release()


def batched(store: ExchangeStore, works: list[Callable[[ExchangeTransaction], Any]]) -> list[Any]:
    """Run the works on threads of their own, all queued while the gate is held: one batch."""
    with gate_held_until_queued(store, len(works)):
        return run_in_threads(store, works)


# ---- every database: the contract of run_write ----------------------------------------


def test_run_write_returns_the_result_once_committed(world: World) -> None:
    assert store_of(world).run_write(audited(world, "committed")) == "committed"
    assert "committed" in reasons_on_record(world)


def test_work_that_raises_leaves_nothing_behind(world: World) -> None:
    with pytest.raises(ValueError, match="half refused"):
        store_of(world).run_write(refused_after_writing(world, "half"))
    assert "half" not in reasons_on_record(world)


def test_concurrent_writes_are_all_committed(world: World) -> None:
    works = [audited(world, f"thread-{i}") for i in range(8)]
    assert run_in_threads(store_of(world), works) == [f"thread-{i}" for i in range(8)]
    assert {f"thread-{i}" for i in range(8)} <= reasons_on_record(world)


# ---- SQLite: group commit ----------------------------------------------------------------


@sqlite_only
def test_writes_ready_together_share_one_transaction(world: World) -> None:
    store = store_of(world)
    assert store.group_commit is not None
    batches, works = store.group_commit.batches, store.group_commit.works
    outcomes = batched(store, [audited(world, f"batched-{i}") for i in range(6)])
    assert outcomes == [f"batched-{i}" for i in range(6)]
    assert store.group_commit.batches == batches + 1
    assert store.group_commit.works == works + 6
    assert {f"batched-{i}" for i in range(6)} <= reasons_on_record(world)


@sqlite_only
def test_a_refusal_in_a_batch_rolls_back_its_own_writes_only(world: World) -> None:
    store = store_of(world)
    works = [
        audited(world, "before"),
        refused_after_writing(world, "refused"),
        audited(world, "after"),
    ]
    before, refused, after = batched(store, works)
    assert (before, after) == ("before", "after")
    assert isinstance(refused, ValueError) and "refused refused" in str(refused)
    on_record = reasons_on_record(world)
    assert {"before", "after"} <= on_record
    assert "refused" not in on_record


@sqlite_only
def test_a_failed_commit_fails_every_work_of_the_batch(world: World) -> None:
    store = store_of(world)

    def breaks_the_commit(transaction: ExchangeTransaction) -> str:
        # A foreign key checked only at COMMIT (deferred): the statement succeeds, the
        # COMMIT of the whole batch fails.
        transaction._run("PRAGMA defer_foreign_keys = ON", ())
        transaction._run(
            "INSERT INTO issued_tokens (jti, subject, subject_issuer, rule_id, rule_version,"
            " audience, scope, kid, issued_at, expires_at, credential_id)"
            " VALUES ('orphan', 's', 'i', 1, 1, '[]', '', 'k', '2026-01-01', '2026-01-01', 4242)",
            (),
        )
        return "broken"

    outcomes = batched(
        store, [audited(world, "fine-1"), breaks_the_commit, audited(world, "fine-2")]
    )
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes), outcomes
    assert not {"fine-1", "fine-2"} & reasons_on_record(world)
    with world.app.extensions["sts"].session_factory() as session:
        assert session.get(IssuedToken, "orphan") is None
    # The kept write connection is usable again.
    assert store.run_write(audited(world, "later")) == "later"


@sqlite_only
def test_a_status_block_claimed_by_refused_work_is_not_used(world: World) -> None:
    store = store_of(world)
    with world.app.extensions["sts"].session_factory() as session:
        session.add(StatusList(size=1024, next_idx=0, created_at=world.clock()))
        session.commit()
    store.status_indexes._blocks.clear()

    def claims_then_refuses(transaction: ExchangeTransaction) -> None:
        assert transaction.claim_status_block(world.clock())
        raise ValueError("refused after claiming")

    def claims(transaction: ExchangeTransaction) -> tuple[int, int] | None:
        assert transaction.claim_status_block(world.clock())
        return transaction.status_index()

    refused, (list_id, first) = batched(store, [claims_then_refuses, claims])
    assert isinstance(refused, ValueError)
    block = store.status_indexes.block
    with world.app.extensions["sts"].session_factory() as session:
        next_idx = session.scalar(select(StatusList.next_idx).where(StatusList.id == list_id))
    assert next_idx == first + block  # only the second claim is committed...
    taken = store.status_indexes.take()
    assert taken == (list_id, first + 1)  # ...and only its block is the process's


@sqlite_only
def test_work_queued_while_a_batch_runs_is_led_by_the_next_thread(world: World) -> None:
    store = store_of(world)
    assert store.group_commit is not None
    inside, go_on = threading.Event(), threading.Event()

    def slow(transaction: ExchangeTransaction) -> str:
        inside.set()
        assert go_on.wait(10)
        return audited(world, "slow")(transaction)

    first: list[Any] = []
    leader = threading.Thread(target=lambda: first.append(store.run_write(slow)))
    batches = store.group_commit.batches
    leader.start()
    assert inside.wait(10)
    later: list[Any] = []
    followers = threading.Thread(
        target=lambda: later.extend(
            run_in_threads(store, [audited(world, f"later-{i}") for i in range(3)])
        )
    )
    followers.start()
    wait_until(lambda: len(store.group_commit._queue) == 3)  # type: ignore[union-attr]
    go_on.set()
    leader.join(10)
    followers.join(10)
    assert first == ["slow"]
    assert later == [f"later-{i}" for i in range(3)]
    assert store.group_commit.batches == batches + 2  # the slow one, then the three together
    assert {"slow", "later-0", "later-1", "later-2"} <= reasons_on_record(world)


@sqlite_only
def test_a_batch_of_one_runs_without_savepoints(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_of(world)
    with caplog.at_level(logging.DEBUG, logger="sts.db.exchange_store"):
        store.run_write(audited(world, "alone"))
    alone = [record.getMessage() for record in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="sts.db.exchange_store"):
        batched(store, [audited(world, "one"), audited(world, "two")])
    together = [record.getMessage() for record in caplog.records]
    assert not any("SAVEPOINT" in message for message in alone)
    assert sum(message == "SAVEPOINT work" for message in together) == 2
    assert sum(message == "COMMIT" for message in together) == 1


@sqlite_only
def test_a_write_inside_a_write_fails_loudly(world: World) -> None:
    store = store_of(world)

    def nested(transaction: ExchangeTransaction) -> str:
        return store.run_write(audited(world, "inner"))

    with pytest.raises(RuntimeError, match="nested"):
        store.run_write(nested)
    assert "inner" not in reasons_on_record(world)
    assert store.run_write(audited(world, "after")) == "after"


@sqlite_only
def test_a_forked_child_starts_with_no_leader_and_a_free_gate(world: World) -> None:
    """Forked while a thread of the parent leads (waiting at the gate, held here as
    another writer would hold it): in the child nobody leads, nothing is queued and the
    gate's thread lock is free, so its first write would not wait for threads that do
    not exist there. (The child does not write: SQLite's own lock state must not be used
    across a fork while the parent's connections are busy; see the write-connection
    tests for a child that writes.)"""
    store = store_of(world)
    assert store.gate is not None and store.group_commit is not None
    group_commit, gate = store.group_commit, store.gate
    gate.acquire()
    leader = threading.Thread(target=lambda: store.run_write(audited(world, "parent")))
    leader.start()
    try:
        wait_until(lambda: group_commit._leading and len(group_commit._queue) == 1)

        def state_in_child() -> str:
            free = gate._thread_lock.acquire(timeout=2)
            return f"leading={group_commit._leading} queued={len(group_commit._queue)} gate={free}"

        reported = in_forked_child(state_in_child, timeout=10)
    finally:
        gate.release()
        leader.join(10)
    assert reported == "leading=False queued=0 gate=True"
    assert "parent" in reasons_on_record(world)  # the parent's leader went on


@sqlite_only
def test_concurrent_exchanges_each_get_their_lineage_and_audit(world: World) -> None:
    store = store_of(world)
    tokens = [world.ci_token() for _ in range(6)]
    responses: list[Any] = [None] * len(tokens)

    def exchange(index: int) -> None:
        responses[index] = world.exchange(tokens[index], audience=DEPLOY)

    with gate_held_until_queued(store, len(tokens)):
        threads = [threading.Thread(target=exchange, args=(i,)) for i in range(len(tokens))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert [response.status_code for response in responses] == [200] * len(tokens), [
        r.json for r in responses
    ]
    jtis = {claims_of(response.json["access_token"])["jti"] for response in responses}
    assert len(jtis) == len(tokens)
    with world.app.extensions["sts"].session_factory() as session:
        lineage = session.scalars(select(IssuedToken).where(IssuedToken.jti.in_(jtis))).all()
        audited_jtis = set(
            session.scalars(select(AuditRecord.issued_jti).where(AuditRecord.issued_jti.in_(jtis)))
        )
        statuses = session.scalar(
            select(func.count(func.distinct(IssuedToken.status_idx))).where(
                IssuedToken.jti.in_(jtis)
            )
        )
    assert len(lineage) == len(tokens) and audited_jtis == jtis and statuses == len(tokens)
