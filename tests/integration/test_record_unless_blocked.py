"""The exchange's last write: lineage and audit rows, recorded only when no identity the
exchange involves (nor the signing key) is blocked, and, with a DPoP proof, only when the
proof was not spent already (the proof is spent either way). On PostgreSQL the proof, the
check and both inserts are one statement, queued with the COMMIT; its result is read after
it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from sts.audit import AuditEntry
from sts.db import queries
from sts.db.exchange_store import Blocks, ExchangeStore, ExchangeTransaction
from sts.db.models import AuditRecord, DpopProof, IssuedToken, Revocation
from sts.revocation import block_identity
from tests.integration.world import World, lineage_row

IDENTITIES = [("subject", "repo:acme/app"), ("client", "ci-runner"), ("key", "kid-1")]
postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


def store_of(world: World) -> ExchangeStore:
    store: ExchangeStore = world.app.extensions["sts"].exchange_store
    return store


def lineage(world: World, jti: str) -> dict[str, Any]:
    return lineage_row(jti, world.clock(), audience=["https://deploy.example"])


def granted(world: World, jti: str) -> dict[str, Any]:
    entry = AuditEntry(at=world.clock(), decision="allow", reason="granted", issued_jti=jti)
    return entry.values()


def record(world: World, jti: str) -> Blocks:
    def work(transaction: ExchangeTransaction) -> Blocks:
        return transaction.record_unless_blocked(
            IDENTITIES, lineage(world, jti), granted(world, jti)
        )

    return store_of(world).run_write(work)


def on_record(world: World, jti: str) -> tuple[int, int]:
    """(lineage rows, audit rows) of this jti."""
    with world.app.extensions["sts"].session_factory() as session:
        tokens = session.scalar(select(func.count()).where(IssuedToken.jti == jti))
        audits = session.scalar(select(func.count()).where(AuditRecord.issued_jti == jti))
        return int(tokens or 0), int(audits or 0)


def block(world: World, kind: str, value: str) -> None:
    with world.app.extensions["sts"].session_factory() as session:
        block_identity(session, kind, value, "test", world.clock())
        session.commit()


def test_no_block_records_both_rows(world: World) -> None:
    blocks = record(world, "jti-free")

    assert blocks.kinds() == []
    assert on_record(world, "jti-free") == (1, 1)


def test_a_blocked_identity_records_nothing_and_is_reported(world: World) -> None:
    block(world, "client", "ci-runner")

    blocks = record(world, "jti-blocked")

    assert blocks.kinds() == ["client"]
    assert on_record(world, "jti-blocked") == (0, 0)


def test_a_lifted_block_no_longer_counts(world: World) -> None:
    block(world, "subject", "repo:acme/app")
    with world.app.extensions["sts"].session_factory() as session:
        session.execute(update(Revocation).values(lifted_at=world.clock()))
        session.commit()

    assert record(world, "jti-lifted").kinds() == []
    assert on_record(world, "jti-lifted") == (1, 1)


def test_the_check_alone_finds_blocks_and_records_nothing(world: World) -> None:
    """``check_blocks`` (the bench's governance-OFF variant): the same check, no rows."""
    block(world, "subject", "repo:acme/app")

    blocks = store_of(world).run_write(lambda transaction: transaction.check_blocks(IDENTITIES))

    assert blocks.kinds() == ["subject"]
    assert world.count(IssuedToken) == 0
    assert world.count(AuditRecord) == 0


def test_a_failing_record_fails_the_commit_and_records_nothing(world: World) -> None:
    record(world, "jti-twice")

    # The same jti again: the lineage insert violates the primary key. On PostgreSQL the
    # statement was only queued, so the error comes with the COMMIT; either way the caller
    # gets the database's error and nothing of the second attempt is kept.
    with pytest.raises(IntegrityError):
        record(world, "jti-twice")
    assert on_record(world, "jti-twice") == (1, 1)


@postgresql_only
def test_the_check_is_sent_with_the_commit_and_read_after_it(world: World) -> None:
    store = store_of(world)
    with store.write() as transaction:
        transaction.hold_governance_shared()
        blocks = transaction.record_unless_blocked(
            IDENTITIES, lineage(world, "jti-deferred"), granted(world, "jti-deferred")
        )
        with pytest.raises(RuntimeError, match="before their transaction committed"):
            blocks.kinds()
        transaction.commit()
    assert blocks.kinds() == []
    assert on_record(world, "jti-deferred") == (1, 1)


@postgresql_only
def test_a_rolled_back_check_records_nothing(world: World) -> None:
    store = store_of(world)
    with store.write() as transaction:
        blocks = transaction.record_unless_blocked(
            IDENTITIES, lineage(world, "jti-rolled-back"), granted(world, "jti-rolled-back")
        )
    with pytest.raises(RuntimeError):
        blocks.kinds()
    assert on_record(world, "jti-rolled-back") == (0, 0)


# ---- with a DPoP proof to spend (RFC 9449 §11.1) ----------------------------------------


def proof_spent(world: World) -> dict[str, Any]:
    return {"jkt": "jkt-1", "jti": "proof-1", "expires_at": world.clock() + timedelta(minutes=1)}


def record_spending(world: World, jti: str) -> list[str]:
    def work(transaction: ExchangeTransaction) -> Blocks:
        return transaction.record_unless_blocked(
            IDENTITIES, lineage(world, jti), granted(world, jti), proof_spent(world)
        )

    return sorted(store_of(world).run_write(work).kinds())


def test_a_fresh_proof_is_spent_with_the_records(world: World) -> None:
    assert record_spending(world, "t1") == []
    assert on_record(world, "t1") == (1, 1)
    assert world.count(DpopProof) == 1


def test_a_spent_proof_records_nothing_and_is_reported(world: World) -> None:
    assert record_spending(world, "t1") == []
    assert record_spending(world, "t2") == [queries.SPENT_PROOF]
    assert on_record(world, "t2") == (0, 0)
    block(world, "client", "ci-runner")
    assert queries.SPENT_PROOF in record_spending(world, "t3")  # blocked as well
    assert on_record(world, "t3") == (0, 0)


def test_a_blocked_exchange_spends_its_proof(world: World) -> None:
    block(world, "client", "ci-runner")
    assert record_spending(world, "t1") == ["client"]
    assert on_record(world, "t1") == (0, 0)
    assert world.count(DpopProof) == 1


@postgresql_only
@pytest.mark.parametrize("first_commits", [True, False])
def test_the_same_proof_in_flight_waits_for_the_first(world: World, first_commits: bool) -> None:
    """Two transactions with one proof, deterministically: B's statement waits on A's
    uncommitted proof row (ON CONFLICT), then records nothing and reports the proof spent
    if A committed, or records its token if A rolled back."""
    engine = world.app.extensions["sts"].engine
    statement = queries.record_unless_blocked_statement(len(IDENTITIES), proof=True)

    def values(jti: str) -> dict[str, Any]:
        bound: dict[str, Any] = {**queries.active_blocks_params(IDENTITIES), **lineage(world, jti)}
        bound.update({f"audit_{name}": value for name, value in granted(world, jti).items()})
        bound.update({f"proof_{name}": value for name, value in proof_spent(world).items()})
        return bound

    first = engine.connect()
    assert first.execute(statement, values("ta")).all() == []
    second_rows: list[Any] = []

    def second() -> None:
        with engine.connect() as connection:
            second_rows.extend(tuple(row) for row in connection.execute(statement, values("tb")))
            connection.commit()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting for the first transaction's proof row
    if first_commits:
        first.commit()
    else:
        first.rollback()
    first.close()
    thread.join(10)
    if first_commits:
        assert second_rows == [(queries.SPENT_PROOF, "")]
        assert (on_record(world, "ta"), on_record(world, "tb")) == ((1, 1), (0, 0))
    else:
        assert second_rows == []
        assert on_record(world, "tb") == (1, 1)
