"""The partial indexes on ``issued_tokens`` (parent_jti, credential_id: only rows where they
are set) still serve the queries that need them: revocation's walk down the lineage, and
revoking by service credential. Checked in each database's own query plan; on PostgreSQL
with sequential scans priced out, so the plan shows whether the index is usable at all
(a table this small would be scanned anyway)."""

from __future__ import annotations

from sqlalchemy import Select, select, text

from sts.db import queries
from sts.db.models import IssuedToken
from tests.integration.world import World


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


def test_the_walk_down_the_lineage_uses_the_parent_index(world: World) -> None:
    world.chain()
    walk = select(queries._lineage(queries.tokens_named("jti", "some-jti")).c.jti)
    assert "ix_issued_tokens_parent_jti" in plan_of(world, walk)


def test_revoking_by_credential_uses_the_credential_index(world: World) -> None:
    world.chain()
    by_credential = select(IssuedToken.jti).where(queries.tokens_named("credential", 1))
    assert "ix_issued_tokens_credential_id" in plan_of(world, by_credential)


def test_the_two_indexes_skip_rows_without_a_value(world: World) -> None:
    engine = world.app.extensions["sts"].engine
    with engine.connect() as connection:
        for column in ("parent_jti", "credential_id"):
            name = f"ix_issued_tokens_{column}"
            if engine.dialect.name == "sqlite":
                found = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
            else:
                found = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
            definition = connection.execute(text(found), {"n": name}).scalar_one()
            assert f"WHERE {column} IS NOT NULL" in definition.replace("(", "").replace(")", "")
