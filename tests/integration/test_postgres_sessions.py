"""PostgreSQL: what every sts session runs with (sts.db.engine.POSTGRES_SESSION_OPTIONS).

JIT is off in sts's sessions: an identity's revocation walks its lineage while every
exchange waits, and PostgreSQL compiled that walk (0.3-0.45 s of a 3.1 s revocation of
70,000 tokens, bench/README.md). A URL's own ``options`` still apply, after sts's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from sts.db import queries
from sts.db.engine import make_engine

pytestmark = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


def with_options(url: str, options: str) -> str:
    return f"{url}?options={quote(options)}"


def setting(engine: Engine, name: str) -> str:
    with engine.connect() as connection:
        return str(connection.execute(text(f"SHOW {name}")).scalar_one())


@pytest.fixture
def engine_for() -> Iterator[object]:
    made: list[Engine] = []

    def make(url: str) -> Engine:
        made.append(make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def test_sts_sessions_run_without_jit(empty_database_url: str, engine_for) -> None:  # type: ignore[no-untyped-def]
    plain = create_engine(make_url(empty_database_url).set(drivername="postgresql+psycopg"))
    try:
        assert setting(plain, "jit") == "on", "the server's default, which sts overrides"
    finally:
        plain.dispose()
    assert setting(engine_for(empty_database_url), "jit") == "off"


def test_the_urls_own_options_still_apply_after_sts_s(empty_database_url: str, engine_for) -> None:  # type: ignore[no-untyped-def]
    timeout = engine_for(with_options(empty_database_url, "-c statement_timeout=4321"))
    assert (setting(timeout, "statement_timeout"), setting(timeout, "jit")) == ("4321ms", "off")
    # An operator who wants JIT back says so in the URL: theirs comes last and wins.
    assert setting(engine_for(with_options(empty_database_url, "-c jit=on")), "jit") == "on"


def explain(engine: Engine, statement: str) -> str:
    with engine.connect() as connection:
        # Every query is JIT-compiled where JIT is on, whatever its estimated cost.
        connection.execute(text("SET jit_above_cost = 0"))
        return "\n".join(
            row[0] for row in connection.execute(text(f"EXPLAIN (ANALYZE) {statement}"))
        )


def test_a_revocations_walk_is_not_compiled(empty_database_url: str, engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(empty_database_url)
    with engine.begin() as connection:  # the walk's table, empty: only the plan matters
        connection.execute(
            text(
                "CREATE TABLE issued_tokens (jti varchar(64) PRIMARY KEY, parent_jti "
                "varchar(64), actor_parent_jti varchar(64), subject varchar(1024), "
                "expires_at timestamptz)"
            )
        )
    walk = select(queries._live_lineage(queries.tokens_named("subject", "s"), datetime.now(UTC)))
    statement = str(walk.compile(engine, compile_kwargs={"literal_binds": True}))
    plain = create_engine(make_url(empty_database_url).set(drivername="postgresql+psycopg"))
    try:
        if _jit_available(plain):  # the control: the same statement is compiled where JIT is on
            assert "JIT:" in explain(plain, statement)
    finally:
        plain.dispose()
    assert "JIT:" not in explain(engine, statement)


def _jit_available(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(text("SELECT pg_jit_available()")).scalar_one())
