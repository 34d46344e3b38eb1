"""Revision writing, without a database: call order, literal values, and branch heads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from sts.db.migrate import alembic_config
from sts.rules.document import empty_state
from sts.rules.migration import (
    RulesMigrationError,
    downgrade_calls,
    rules_head,
    upgrade_calls,
    write_revision,
)
from sts.rules.plan import diff_states

ISSUER = {"issuer": "https://ci.example.com", "jwks_uri": "https://ci.example.com/jwks",
          "audiences": ["https://sts.test"], "algorithms": ["ES256"]}  # fmt: skip
RULE = {"subject_token": {"issuer": "ci", "subject": "x"},
        "allow": {"audiences": ["https://a"], "max_ttl": 60}}  # fmt: skip


def test_deletes_come_first_then_referenced_entries_then_rules() -> None:
    before = empty_state()
    before["issuer"]["old"] = ISSUER
    before["rule"]["old-rule"] = {**RULE, "subject_token": {"issuer": "old", "subject": "x"}}
    after = empty_state()
    after["issuer"]["ci"] = ISSUER  # a rename: the same issuer URL under a new name
    after["rule"]["new-rule"] = RULE
    changes = diff_states(before, after)
    up = upgrade_calls(changes)
    assert up[:2] == ["ops.delete_rule('old-rule')", "ops.delete_issuer('old')"]
    assert [c.split("\n")[:2] for c in up[2:]] == [
        ["ops.put_issuer(", "        'ci',"],
        ["ops.put_rule(", "        'new-rule',"],
    ]
    down = downgrade_calls(changes)
    assert down[:2] == ["ops.delete_rule('new-rule')", "ops.delete_issuer('ci')"]
    assert [c.split("\n")[:2] for c in down[2:]] == [
        ["ops.put_issuer(", "        'old',"],
        ["ops.put_rule(", "        'old-rule',"],
    ]


def test_two_revisions_from_one_state_are_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    config = alembic_config(engine, [tmp_path / "rules"])
    desired = empty_state()
    desired["rule"]["r"] = RULE
    changes = diff_states(empty_state(), desired)
    now = datetime(2026, 11, 28, tzinfo=UTC)

    def write(script: ScriptDirectory, message: str) -> None:
        write_revision(
            changes,
            script=script,
            directory=tmp_path / "rules",
            schema_head="0001_baseline",
            message=message,
            source="r.yaml",
            created=now,
        )

    write(ScriptDirectory.from_config(config), "first")
    script = ScriptDirectory.from_config(config)
    write(script, "one")  # two engineers, each from the same head: a fork
    write(script, "two")
    with pytest.raises(RulesMigrationError, match="the rules branch has several heads"):
        rules_head(ScriptDirectory.from_config(config))
    engine.dispose()
