"""The indexes an exchange writes to: exactly those a query needs, and they serve it.

The partial indexes on ``issued_tokens`` (parent_jti, credential_id, actor_parent_jti,
actor_credential_id, actor_token_id: only rows where they are set) still serve the
queries that need them: revocation's walk down the lineage (along both edges), revoking
by service credential (as subject or actor), and finding a leaked upstream token.
Checked in each database's own query plan; on PostgreSQL with sequential scans priced
out, so the plan shows whether the index is usable at all (a table this small would be
scanned anyway)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, inspect, select, text

from sts.db import queries
from sts.db.models import AuditRecord, IssuedToken
from tests.integration.world import World, claims_of


def plan_of(world: World, statement: Select[tuple[str]]) -> str:
    engine = world.app.extensions["sts"].engine
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            return "\n".join(str(row[-1]) for row in rows)
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        rows = connection.execute(text(f"EXPLAIN {compiled}")).all()
        return "\n".join(str(row[0]) for row in rows)


def test_the_walk_down_the_lineage_uses_the_parent_indexes(world: World) -> None:
    world.chain()
    walk = select(queries._lineage(queries.tokens_named("jti", "some-jti")).c.jti)
    plan = plan_of(world, walk)
    assert "ix_issued_tokens_parent_jti" in plan
    assert "ix_issued_tokens_actor_parent_jti" in plan


def test_revoking_by_credential_uses_the_credential_indexes(world: World) -> None:
    world.chain()
    by_credential = select(IssuedToken.jti).where(queries.tokens_named("credential", 1))
    plan = plan_of(world, by_credential)
    assert "ix_issued_tokens_credential_id" in plan
    assert "ix_issued_tokens_actor_credential_id" in plan


def test_a_leaked_upstream_token_is_found_through_indexes(world: World) -> None:
    """``sts exposure --revoke`` and exposure reports look it up holding the governance
    lock: on the subject's side by its sub (``subject_token_id`` has no index of its
    own), on the actor's by ``actor_token_id``."""
    world.chain()
    roots = queries.upstream_token_roots("leaked-jti", "repo:acme/payments")
    plan = plan_of(world, select(IssuedToken.jti).where(roots))
    assert "ix_issued_tokens_subject" in plan
    assert "ix_issued_tokens_actor_token_id" in plan


PARTIAL = (
    "parent_jti",
    "credential_id",
    "actor_parent_jti",
    "actor_credential_id",
    "actor_token_id",
    "dpop_jkt",
)


def test_the_partial_indexes_skip_rows_without_a_value(world: World) -> None:
    engine = world.app.extensions["sts"].engine
    with engine.connect() as connection:
        for column in PARTIAL:
            name = f"ix_issued_tokens_{column}"
            if engine.dialect.name == "sqlite":
                found = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
            else:
                found = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
            definition = connection.execute(text(found), {"n": name}).scalar_one()
            assert f"WHERE {column} IS NOT NULL" in definition.replace("(", "").replace(")", "")


# Each is one more B-tree page every exchange writes (migration 0004); the query each one
# serves is named beside it.
EXCHANGE_TABLE_INDEXES = {
    "issued_tokens": {
        "ix_issued_tokens_subject",  # sts revoke --subject, offboarding
        "ix_issued_tokens_client_id",  # sts revoke --client
        "ix_issued_tokens_expires_at",  # sts gc
        "ix_issued_tokens_parent_jti",  # the walk down the lineage
        "ix_issued_tokens_credential_id",  # revoking a service credential
        # Partial, as the two above: rows without an actor token write no entry.
        "ix_issued_tokens_actor_parent_jti",  # the walk down the actor's edge
        "ix_issued_tokens_actor_credential_id",  # revoking a credential used as actor
        "ix_issued_tokens_actor_token_id",  # a leaked upstream token used as actor
        # Partial too: a bearer token writes no entry.
        "ix_issued_tokens_dpop_jkt",  # sts revoke --dpop-key (RFC 9449)
        "ix_issued_tokens_status",  # one status-list index per token
    },
    "audit_log": {"ix_audit_log_at"},  # sts gc, and every look-up by time
}


def test_an_exchange_writes_only_the_indexes_a_query_needs(world: World) -> None:
    inspector = inspect(world.app.extensions["sts"].engine)
    for table, expected in EXCHANGE_TABLE_INDEXES.items():
        assert {index["name"] for index in inspector.get_indexes(table)} == expected


def test_a_tokens_audit_row_is_found_by_the_time_in_its_jti(world: World) -> None:
    """The look-up the README gives an operator, without an index on ``issued_jti``: the
    jti's first 12 hex digits are its issuance time in milliseconds, and ``at`` is
    indexed."""
    jti = claims_of(world.chain()[0])["jti"]
    issued = datetime.fromtimestamp(int(jti[:12], 16) / 1000, UTC)
    look_up = select(AuditRecord.decision).where(
        AuditRecord.at.between(issued - timedelta(seconds=1), issued + timedelta(seconds=1)),
        AuditRecord.issued_jti == jti,
    )
    with world.app.extensions["sts"].session_factory() as session:
        assert session.scalars(look_up).all() == ["allow"]
    assert "ix_audit_log_at" in plan_of(world, look_up)
