"""``sts gc``: lineage, lifted blocks and audit past their retention; spent status lists."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy.orm import Session

from sts.db.locks import write_transaction
from sts.db.models import AuditRecord, IssuedToken, Revocation, StatusList
from sts.db.queries import RETIRE_AFTER_LAST_CLAIM
from sts.housekeeping import collect_garbage
from sts.revocation import issuer_scoped
from sts.status_list import allocate_token_status
from tests.conftest import TEST_ISSUER
from tests.integration.test_offboarding import sts
from tests.integration.world import CI_SUBJECT, World, claims_of


def test_gc_deletes_only_what_is_past_its_retention(world: World) -> None:
    settings = world.app.extensions["sts"].settings
    world.chain()
    sts(world, "revoke", "--subject", CI_SUBJECT)
    sts(world, "revoke", "--lift", "--subject", CI_SUBJECT)
    audit_before = world.count(AuditRecord)

    kept = sts(world, "gc")  # nothing has expired long enough
    assert kept.exit_code == 0, kept.output
    assert (
        "deleted 0 lineage row(s), 0 lifted or expired block(s), 0 audit record(s)" in kept.output
    )
    assert world.count(IssuedToken) == 3

    world.clock.advance(settings.max_token_ttl + settings.lineage_retention + 1)
    fresh = world.chain()  # live tokens are never collected
    collected = sts(world, "gc")
    assert (
        "deleted 3 lineage row(s), 1 lifted or expired block(s), 0 audit record(s)"
        in collected.output
    )
    assert world.count(IssuedToken) == 3
    assert world.count(Revocation) == 0
    assert world.is_active(fresh[2])

    world.clock.advance(settings.audit_retention)
    sts(world, "gc")
    assert world.count(AuditRecord) < audit_before


def test_gc_retires_full_lists_whose_tokens_have_all_expired(world: World) -> None:
    services = world.app.extensions["sts"]
    with services.exchange_store.write() as transaction:
        for _ in range(8):  # fills list 1 (size 8) without tokens
            allocate_token_status(transaction, TEST_ISSUER, 8, world.clock())
        transaction.commit()
    # A process may still hold indexes of list 1's last block: not retired until well
    # after that block's claim (sts.db.status_indexes).
    assert "retired 0 status list(s)" in sts(world, "gc").output
    world.clock.advance(RETIRE_AFTER_LAST_CLAIM.total_seconds())
    assert "retired 0 status list(s)" in sts(world, "gc").output
    world.clock.advance(1)
    token = world.chain()[0]  # lands in list 2, the open one
    assert world.client.get("/statuslists/1").status_code == 200

    assert "retired 1 status list(s)" in sts(world, "gc").output
    world.clock.advance(services.settings.status_list_ttl)  # the served copy's lifetime
    assert world.client.get("/statuslists/1").status_code == 404
    assert world.client.get("/statuslists/2").status_code == 200
    with services.session_factory() as session:
        retired = session.get(StatusList, 1)
        assert retired is not None and retired.retired_at is not None
    assert world.is_active(token)


def test_gc_deletes_in_transactions_of_at_most_one_batch(world: World) -> None:
    """Each transaction holds SQLite's write lock while exchanges wait: none deletes more
    than one batch of rows, and together they delete everything past its retention."""
    services = world.app.extensions["sts"]
    settings = services.settings
    for _ in range(3):
        world.chain()  # 9 lineage rows, 9 audit records
    world.clock.advance(settings.max_token_ttl + settings.audit_retention + 1)
    live = world.chain()
    deleted_per_transaction: list[int] = []

    @contextmanager
    def counted_write() -> Iterator[Session]:
        before = world.count(IssuedToken) + world.count(AuditRecord)
        with write_transaction(services.session_factory) as session:
            yield session
        deleted_per_transaction.append(before - world.count(IssuedToken) - world.count(AuditRecord))

    collected = collect_garbage(counted_write, settings, world.clock(), batch=4)

    assert (collected.lineage, collected.audit) == (9, 9)
    assert max(deleted_per_transaction) == 4
    assert sum(deleted_per_transaction) == 18
    assert world.count(IssuedToken) == 3
    assert world.is_active(live[2])


def test_gc_deletes_a_reported_upstream_tokens_block_once_the_token_cannot_matter(
    world: World,
) -> None:
    """An exposure report's block on an upstream token records the token's verified exp:
    ``sts gc`` deletes it once that is past the lineage retention (no exchange accepts
    the token after exp + leeway anyway). A block an operator stored from a bare token id
    has no verified expiry and stays until lifted."""
    settings = world.app.extensions["sts"].settings
    reported = world.ci_token(lifetime=600)
    world.client.post(
        "/exposure-reports",
        data={"token": reported},
        content_type="application/x-www-form-urlencoded",
    )
    sts(world, "revoke", "--upstream-token", "operator-named-jti")
    with world.app.extensions["sts"].session_factory() as session:
        blocks = {row.value: row.expires_at for row in session.query(Revocation)}
    exp = claims_of(reported)["exp"]
    scoped = issuer_scoped(claims_of(reported)["iss"], claims_of(reported)["jti"])
    assert blocks[scoped].timestamp() == exp
    assert blocks["operator-named-jti"] is None

    world.clock.advance(600 + settings.lineage_retention - 1)
    assert "0 lifted or expired block(s)" in sts(world, "gc").output
    world.clock.advance(2)
    assert "1 lifted or expired block(s)" in sts(world, "gc").output
    assert world.count(Revocation) == 1  # the operator's, without an expiry


def test_gc_keeps_lineage_for_the_clock_leeway_whatever_the_retention(world: World) -> None:
    """A relying party may accept a token up to the leeway past its ``exp``; its lineage
    row is what keeps it revoked (its status-list bit) meanwhile, even with
    ``STS_LINEAGE_RETENTION=0``."""
    services = world.app.extensions["sts"]
    settings = services.settings.replace(lineage_retention=0)
    first = world.chain()[0]
    expired_at = claims_of(first)["exp"]

    def write() -> AbstractContextManager[Session]:
        return write_transaction(services.session_factory)

    world.clock.advance(expired_at - world.now() + settings.clock_leeway - 1)
    assert collect_garbage(write, settings, world.clock()).lineage == 0
    world.clock.advance(2)
    assert collect_garbage(write, settings, world.clock()).lineage == 3
