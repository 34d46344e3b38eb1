"""``python -m bench --minimal-record``'s server (bench.minimal_record): each granted
exchange commits one narrow row, and neither a lineage nor an audit row."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from bench import minimal_record, no_governance
from bench.profile import app_in_process, drive
from bench.world import DEFAULT_POSTGRES
from sts.db.models import AuditRecord, IssuedToken
from sts.grants import token_exchange


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_each_token_gets_one_narrow_row_and_no_lineage_or_audit(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app_in_process(database, DEFAULT_POSTGRES, 12, "ci-deploy") as (app, environs):
        engine = app.extensions["sts"].engine
        minimal_record.create_table(engine)
        with engine.connect() as connection:
            audit_before = connection.scalar(select(func.count()).select_from(AuditRecord))
        monkeypatch.setattr(token_exchange, "_record_issued", minimal_record._minimal_recording)
        monkeypatch.setattr(token_exchange, "allocate_token_status", no_governance._no_status)

        assert drive(app, environs) == 12

        with engine.connect() as connection:
            jtis = connection.execute(text(f"SELECT jti FROM {minimal_record.TABLE}")).scalars()
            assert len(set(jtis)) == 12
            assert connection.scalar(select(func.count()).select_from(IssuedToken)) == 0
            audit_after = connection.scalar(select(func.count()).select_from(AuditRecord))
            assert audit_after == audit_before
