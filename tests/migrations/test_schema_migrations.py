"""The baseline migration and the models agree, and migrations go both ways, on both DBs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from sts.app import create_app
from sts.db.engine import make_engine
from sts.db.migrate import (
    alembic_config,
    current_revisions,
    downgrade,
    schema_head,
    schema_is_at_head,
    upgrade,
)
from sts.db.models import Base
from sts.errors import StartupError
from sts.rules import ops

EXPECTED_TABLES = {
    "clients",
    "trusted_issuers",
    "service_credentials",
    "rules",
    "rules_state",
    "signing_keys",
    "issued_tokens",
    "revocations",
    "client_assertions",
    "audit_log",
    "status_lists",
}


def columns_of(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def index_names_of(engine: Engine, table: str) -> set[str]:
    return {index["name"] or "" for index in inspect(engine).get_indexes(table)}


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    upgrade(config)
    assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert current_revisions(engine) == ()
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_models_and_migrations_agree(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    upgrade(alembic_config(engine))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    engine.dispose()


def test_service_refuses_schema_not_at_head(empty_database_url: str, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(empty_database_url, auto_migrate=False)
    with pytest.raises(StartupError, match=r"run `sts db upgrade`"):
        create_app(settings)


def test_service_refuses_after_a_downgrade(empty_database_url: str, make_settings) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    upgrade(config)
    downgrade(config, "base")
    settings = make_settings(empty_database_url, auto_migrate=False)
    head = schema_head(config)
    with pytest.raises(StartupError, match=rf"empty \(no revision\) but sts needs {head}"):
        create_app(settings)
    engine.dispose()


def test_embedded_default_upgrades_itself(empty_database_url: str, make_settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(empty_database_url, auto_migrate=True))
    engine = app.extensions["sts"].engine
    assert schema_is_at_head(engine, alembic_config(engine))[0]
    engine.dispose()


def test_revocation_revision_downgrades_keeping_lineage(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    upgrade(config, "0002_revocation")
    now = "2026-11-28 12:00:00"
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO status_lists (id, size, next_idx, created_at) VALUES (1, 8, 1, :n)"),
            {"n": now},
        )
        connection.execute(
            text(
                "INSERT INTO issued_tokens (jti, subject, subject_issuer, rule_id, rule_version,"
                " audience, scope, kid, issued_at, expires_at, status_list_id, status_idx)"
                " VALUES ('j1', 's', 'i', 1, 1, '[]', '', 'k', :n, :n, 1, 0)"
            ),
            {"n": now},
        )
    downgrade(config, "0001_baseline")
    inspector = inspect(engine)
    assert "status_lists" not in inspector.get_table_names()
    assert "status_list_id" not in {c["name"] for c in inspector.get_columns("issued_tokens")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT jti, status_idx FROM issued_tokens")).all() == [
            ("j1", 0)
        ]
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_status_blocks_revision_keeps_the_lists(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    upgrade(config, "0002_revocation")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO status_lists (id, size, next_idx, created_at) VALUES (1, 8, 3, :n)"),
            {"n": "2026-11-28 12:00:00"},
        )
    upgrade(config)
    listed = "SELECT id, next_idx, last_claim_at FROM status_lists"
    with engine.connect() as connection:
        assert connection.execute(text(listed)).all() == [(1, 3, None)]
    downgrade(config, "0002_revocation")
    assert "last_claim_at" not in {c["name"] for c in inspect(engine).get_columns("status_lists")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, next_idx FROM status_lists")).all() == [(1, 3)]
    engine.dispose()


def test_fewer_indexes_revision_goes_both_ways(empty_database_url: str) -> None:
    """0004 drops three indexes no exchange-path query reads; its downgrade restores them."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)

    def indexes(table: str) -> set[str]:
        return {index["name"] or "" for index in inspect(engine).get_indexes(table)}

    upgrade(config, "0003_exchange_writes")
    dropped = {"ix_issued_tokens_kid", "ix_issued_tokens_rule"}
    assert dropped <= indexes("issued_tokens")
    assert "ix_audit_log_issued_jti" in indexes("audit_log")
    upgrade(config)
    assert not dropped & indexes("issued_tokens")
    assert indexes("audit_log") == {"ix_audit_log_at"}
    downgrade(config, "0003_exchange_writes")
    assert dropped <= indexes("issued_tokens")
    assert indexes("audit_log") == {"ix_audit_log_at", "ix_audit_log_issued_jti"}
    engine.dispose()


def test_no_status_list_foreign_key_revision_keeps_the_tokens(empty_database_url: str) -> None:
    """0005 drops the foreign key from a token's status entry to its list (rebuilding the
    table on SQLite) and keeps every row; its downgrade puts the key back."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)

    def status_keys() -> list[str]:
        keys = inspect(engine).get_foreign_keys("issued_tokens")
        return [key["name"] or "" for key in keys if key["referred_table"] == "status_lists"]

    upgrade(config, "0004_fewer_exchange_indexes")
    assert status_keys() == ["fk_issued_tokens_status_list_id_status_lists"]
    token = (
        "INSERT INTO issued_tokens (jti, parent_jti, subject, subject_issuer, rule_id,"
        " rule_version, audience, scope, kid, issued_at, expires_at, status_list_id,"
        " status_idx) VALUES (:jti, :parent, 's', 'i', 1, 1, '[]', '', 'k', :t, :t, 1, :idx)"
    )
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO status_lists (id, size, next_idx, created_at) VALUES (1, 8, 2, :t)"),
            {"t": "2026-11-29 12:00:00"},
        )
        for jti, parent, idx in (("j1", None, 0), ("j2", "j1", 1)):
            connection.execute(
                text(token), {"jti": jti, "parent": parent, "idx": idx, "t": "2026-11-29 12:00:00"}
            )
    rows = "SELECT jti, parent_jti, status_list_id, status_idx FROM issued_tokens ORDER BY jti"
    kept = [("j1", None, 1, 0), ("j2", "j1", 1, 1)]

    upgrade(config)
    assert status_keys() == []
    with engine.connect() as connection:
        assert [tuple(row) for row in connection.execute(text(rows))] == kept
        if engine.dialect.name == "sqlite":  # keys were off for the rebuild, and are on again
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    downgrade(config, "0004_fewer_exchange_indexes")
    assert status_keys() == ["fk_issued_tokens_status_list_id_status_lists"]
    with engine.connect() as connection:
        assert [tuple(row) for row in connection.execute(text(rows))] == kept
    engine.dispose()


def test_actor_lineage_revision_goes_both_ways_keeping_the_tokens(empty_database_url: str) -> None:
    """0006 adds the actor's lineage (three nullable columns, two partial indexes); tokens
    on record keep their rows, with no actor lineage; its downgrade drops them again."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    added = {"actor_parent_jti", "actor_credential_id", "actor_issuer"}
    indexes = {"ix_issued_tokens_actor_parent_jti", "ix_issued_tokens_actor_credential_id"}

    upgrade(config, "0005_no_status_list_foreign_key")
    assert not added & columns_of(engine, "issued_tokens")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO issued_tokens (jti, parent_jti, subject, subject_issuer, rule_id,"
                " rule_version, audience, scope, kid, issued_at, expires_at)"
                " VALUES ('j1', NULL, 's', 'i', 1, 1, '[]', '', 'k', :t, :t)"
            ),
            {"t": "2026-11-30 12:00:00"},
        )

    upgrade(config)
    assert added <= columns_of(engine, "issued_tokens")
    assert indexes <= index_names_of(engine, "issued_tokens")
    listed = "SELECT jti, actor_parent_jti, actor_credential_id, actor_issuer FROM issued_tokens"
    with engine.connect() as connection:
        assert [tuple(row) for row in connection.execute(text(listed))] == [
            ("j1", None, None, None)
        ]
    downgrade(config, "0005_no_status_list_foreign_key")
    assert not added & columns_of(engine, "issued_tokens")
    assert not indexes & index_names_of(engine, "issued_tokens")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT jti, subject FROM issued_tokens")).all() == [
            ("j1", "s")
        ]
        if engine.dialect.name == "sqlite":  # keys were off for the rebuild, and are on again
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_upstream_token_lineage_revision_goes_both_ways_keeping_the_tokens(
    empty_database_url: str,
) -> None:
    """0007 adds the actor token's id (with a partial index); tokens on record keep their
    rows, with no actor token id; its downgrade drops both."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    indexes = {"ix_issued_tokens_actor_token_id"}

    upgrade(config, "0006_actor_lineage")
    assert "actor_token_id" not in columns_of(engine, "issued_tokens")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO issued_tokens (jti, subject, subject_issuer, subject_token_id,"
                " rule_id, rule_version, audience, scope, kid, issued_at, expires_at)"
                " VALUES ('j1', 's', 'i', 'up-1', 1, 1, '[]', '', 'k', :t, :t)"
            ),
            {"t": "2026-11-30 12:00:00"},
        )

    upgrade(config)
    assert "actor_token_id" in columns_of(engine, "issued_tokens")
    assert indexes <= index_names_of(engine, "issued_tokens")
    listed = "SELECT jti, subject_token_id, actor_token_id FROM issued_tokens"
    with engine.connect() as connection:
        assert [tuple(row) for row in connection.execute(text(listed))] == [("j1", "up-1", None)]
    downgrade(config, "0006_actor_lineage")
    assert "actor_token_id" not in columns_of(engine, "issued_tokens")
    assert not indexes & index_names_of(engine, "issued_tokens")
    with engine.connect() as connection:
        listed = "SELECT jti, subject_token_id FROM issued_tokens"
        assert connection.execute(text(listed)).all() == [("j1", "up-1")]
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_block_expiry_revision_goes_both_ways_keeping_the_blocks(empty_database_url: str) -> None:
    """0008 adds ``revocations.expires_at`` (NULL for the blocks on record); its downgrade
    drops it and keeps them."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)

    upgrade(config, "0007_upstream_token_lineage")
    assert "expires_at" not in columns_of(engine, "revocations")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO revocations (kind, value, reason, created_at)"
                " VALUES ('subject', 's', 'r', :t)"
            ),
            {"t": "2026-11-30 12:00:00"},
        )
    upgrade(config)
    listed = "SELECT kind, value, expires_at FROM revocations"
    with engine.connect() as connection:
        assert [tuple(row) for row in connection.execute(text(listed))] == [("subject", "s", None)]
    downgrade(config, "0007_upstream_token_lineage")
    assert "expires_at" not in columns_of(engine, "revocations")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT kind, value FROM revocations")).all() == [
            ("subject", "s")
        ]
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_dpop_proofs_revision_goes_both_ways(empty_database_url: str) -> None:
    """0009 adds ``dpop_proofs`` (RFC 9449 §11.1), keyed by (proof key, jti) so that a
    second insert of one proof is a conflict; its downgrade drops the table."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)

    upgrade(config, "0008_block_expiry")
    assert "dpop_proofs" not in inspect(engine).get_table_names()
    upgrade(config)
    assert columns_of(engine, "dpop_proofs") >= {"jkt", "jti", "expires_at"}
    assert "ix_dpop_proofs_expires_at" in index_names_of(engine, "dpop_proofs")
    insert = text("INSERT INTO dpop_proofs (jkt, jti, expires_at) VALUES (:k, :j, :t)")
    with engine.begin() as connection:
        connection.execute(insert, {"k": "key-1", "j": "j", "t": "2026-11-30 12:00:00"})
        connection.execute(insert, {"k": "key-2", "j": "j", "t": "2026-11-30 12:00:00"})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert, {"k": "key-1", "j": "j", "t": "2026-11-30 12:00:00"})
    downgrade(config, "0008_block_expiry")
    assert "dpop_proofs" not in inspect(engine).get_table_names()
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_client_dpop_bound_revision_goes_both_ways_with_older_rules_revisions(
    empty_database_url: str,
) -> None:
    """0010 adds ``clients.dpop_bound_access_tokens`` (RFC 9449 §5.2), false for the clients
    on record. A rules revision's ``put_client`` works before it (as an older revision
    runs in a fresh upgrade) as long as it does not ask for the flag, and writes the flag
    after it, both ways; the rules file's state names the flag only when it is set."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    fields = {"auth_method": "client_secret_basic", "secret_hash": "h"}

    upgrade(config, "0009_dpop_proofs")
    assert "dpop_bound_access_tokens" not in columns_of(engine, "clients")
    with engine.begin() as connection:
        ops.put_client("older", fields, connection=connection)
        with pytest.raises(ValueError, match="0010_client_dpop_bound"):
            ops.put_client(
                "newer", {**fields, "dpop_bound_access_tokens": True}, connection=connection
            )
    upgrade(config)
    flags = "SELECT client_id, dpop_bound_access_tokens FROM clients ORDER BY client_id"
    with engine.begin() as connection:
        assert [tuple(row) for row in connection.execute(text(flags))] == [("older", False)]
        ops.put_client("newer", {**fields, "dpop_bound_access_tokens": True}, connection=connection)
        ops.put_client("older", {**fields, "dpop_bound_access_tokens": True}, connection=connection)
        ops.put_client("older", fields, connection=connection)  # the flag left out: false
        assert [tuple(row) for row in connection.execute(text(flags))] == [
            ("newer", True),
            ("older", False),
        ]
        state = ops.read_state(connection)["client"]
        assert state["newer"]["dpop_bound_access_tokens"] is True
        assert "dpop_bound_access_tokens" not in state["older"]
    downgrade(config, "0009_dpop_proofs")
    assert "dpop_bound_access_tokens" not in columns_of(engine, "clients")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT client_id FROM clients ORDER BY 1")).all() == [
            ("newer",),
            ("older",),
        ]
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


def test_client_introspects_revision_goes_both_ways_with_older_rules_revisions(
    empty_database_url: str,
) -> None:
    """0011 adds ``clients.introspects`` (RFC 7662 §2.2), NULL (every token) for the
    clients on record. A rules revision's ``put_client`` works before it as long as it does
    not ask for audiences, and writes them after it, both ways; the rules file's state
    names them only when set."""
    engine = make_engine(empty_database_url)
    config = alembic_config(engine)
    fields = {"auth_method": "client_secret_basic", "secret_hash": "h", "resource_server": True}
    audiences = ["https://deploy.acme.internal", "https://vault.acme.internal"]

    upgrade(config, "0010_client_dpop_bound")
    assert "introspects" not in columns_of(engine, "clients")
    with engine.begin() as connection:
        ops.put_client("older", fields, connection=connection)
        with pytest.raises(ValueError, match="0011_client_introspects"):
            ops.put_client("newer", {**fields, "introspects": audiences}, connection=connection)
    upgrade(config)
    assert "introspects" in columns_of(engine, "clients")
    nulls = "SELECT client_id FROM clients WHERE introspects IS NULL ORDER BY client_id"
    with engine.begin() as connection:
        assert connection.execute(text(nulls)).all() == [("older",)]
        ops.put_client("newer", {**fields, "introspects": audiences}, connection=connection)
        ops.put_client("older", {**fields, "introspects": audiences}, connection=connection)
        ops.put_client("older", fields, connection=connection)  # left out: NULL again
        assert connection.execute(text(nulls)).all() == [("older",)]
        state = ops.read_state(connection)["client"]
        assert state["newer"]["introspects"] == audiences
        assert "introspects" not in state["older"]
    downgrade(config, "0010_client_dpop_bound")
    assert "introspects" not in columns_of(engine, "clients")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT client_id FROM clients ORDER BY 1")).all() == [
            ("newer",),
            ("older",),
        ]
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    engine.dispose()


RULES_REVISION = '''"""{title}"""
from sts.rules import ops

revision = {revision!r}
down_revision = {down!r}
branch_labels = {labels!r}
depends_on = {depends!r}


def upgrade() -> None:
    ops.put_client("ci-runner", {fields!r})


def downgrade() -> None:
    ops.delete_client("ci-runner")
'''


def write_rules_revisions(
    directory: Path, revisions: list[tuple[str, str | None, str | None, dict[str, Any]]]
) -> None:
    """Rules revisions as ``sts rules migration`` writes them, each putting ``ci-runner``:
    (revision, schema revision it depends on, fields); the first labelled ``rules``."""
    down = None
    for number, (revision, depends, written) in enumerate(revisions, 1):
        (directory / f"{number:04d}_{revision}.py").write_text(
            RULES_REVISION.format(
                title=f"depends on {depends}",
                revision=revision,
                down=down,
                labels=("rules",) if down is None else None,
                depends=depends,
                fields=written,
            )
        )
        down = revision


def test_a_fresh_upgrade_runs_a_rules_revision_after_the_schema_column_it_writes(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A rules revision written at schema 0009, then one that binds a client to DPoP (as
    ``sts rules migration`` writes it: it depends on 0010, which added the column): a
    fresh ``sts db upgrade`` of both branches applies the second after 0010."""
    fields = {"auth_method": "client_secret_basic", "secret_hash": "h"}
    write_rules_revisions(
        tmp_path,
        [
            ("r1", "0009_dpop_proofs", fields),
            ("r2", "0010_client_dpop_bound", {**fields, "dpop_bound_access_tokens": True}),
        ],
    )
    engine = make_engine(empty_database_url)
    config = alembic_config(engine, [tmp_path])
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    assert "r2" in current_revisions(engine)
    with engine.connect() as connection:
        flags = "SELECT client_id, dpop_bound_access_tokens FROM clients"
        assert [tuple(row) for row in connection.execute(text(flags))] == [("ci-runner", True)]
    engine.dispose()


def test_a_fresh_upgrade_runs_a_rules_revision_after_the_introspects_column(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A rules revision written at schema 0010, then one that limits a resource server to
    its audiences (it depends on 0011, which added the column): a fresh ``sts db upgrade``
    of both branches applies the second after 0011."""
    fields = {"auth_method": "client_secret_basic", "secret_hash": "h", "resource_server": True}
    write_rules_revisions(
        tmp_path,
        [
            ("r1", "0010_client_dpop_bound", fields),
            ("r2", "0011_client_introspects", {**fields, "introspects": ["https://a.example"]}),
        ],
    )
    engine = make_engine(empty_database_url)
    config = alembic_config(engine, [tmp_path])
    upgrade(config)
    assert schema_is_at_head(engine, config)[0]
    assert "r2" in current_revisions(engine)
    with engine.connect() as connection:
        assert ops.read_state(connection)["client"]["ci-runner"]["introspects"] == [
            "https://a.example"
        ]
    engine.dispose()


def test_a_schema_downgrade_keeps_the_rules_revisions_that_do_not_need_it(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A later rules revision depends on no schema revision unless it writes a column one
    added: Alembic rolls a revision back with what it depends on, and rolling a release's
    schema back must not undo rules changes (here: a client disabled after a leak)."""
    fields = {"auth_method": "client_secret_basic", "secret_hash": "h"}
    write_rules_revisions(
        tmp_path, [("r1", "0009_dpop_proofs", fields), ("r2", None, {**fields, "disabled": True})]
    )
    engine = make_engine(empty_database_url)
    config = alembic_config(engine, [tmp_path])
    upgrade(config)
    downgrade(config, "0009_dpop_proofs")
    assert "dpop_bound_access_tokens" not in columns_of(engine, "clients")
    assert "r2" in current_revisions(engine)
    with engine.connect() as connection:
        disabled = "SELECT client_id, disabled FROM clients"
        assert [tuple(row) for row in connection.execute(text(disabled))] == [("ci-runner", True)]
    engine.dispose()


def test_a_rules_revision_missing_from_the_rules_directory_is_named(
    empty_database_url: str,
    make_settings,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A database at a rules revision that STS_RULES_MIGRATIONS_DIR does not hold (the
    image started without its rules mounted, a replica from an older checkout): `sts
    serve`, `sts check` and the db and rules commands stopped with Alembic's
    ResolutionError traceback. Now a StartupError naming the revision and the setting."""
    rules = tmp_path / "rules"
    rules.mkdir()
    fields = {"auth_method": "client_secret_basic", "secret_hash": "h"}
    write_rules_revisions(rules, [("r1", "0009_dpop_proofs", fields)])
    engine = make_engine(empty_database_url)
    upgrade(alembic_config(engine, [rules]))
    engine.dispose()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = make_settings(empty_database_url, auto_migrate=False, rules_migrations_dir=elsewhere)
    with pytest.raises(StartupError, match=r"revision\(s\) r1\b.*STS_RULES_MIGRATIONS_DIR"):
        create_app(settings)
