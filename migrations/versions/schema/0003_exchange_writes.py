"""Fewer writes per exchange: status-list indexes claimed in blocks; partial indexes.

* ``status_lists.last_claim_at``: when a process last claimed a block of indexes from the
  list (sts.db.status_indexes). ``sts gc`` retires a full list only well after its last
  claim, so no process can still be holding indexes of a list that is no longer served.
  Existing lists get NULL (no block was ever claimed from them).
* ``ix_issued_tokens_parent_jti`` and ``ix_issued_tokens_credential_id`` cover only the
  rows where the column is set: a token exchanged from an external JWT has neither, and
  its insert no longer writes those two index pages. Queries compare these columns with a
  value, which implies IS NOT NULL, so both planners still use the indexes.

Revision ID: 0003_exchange_writes
Revises: 0002_revocation
Create Date: 2026-11-29 03:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_exchange_writes"
down_revision: str | Sequence[str] | None = "0002_revocation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTIAL = ("parent_jti", "credential_id")


def upgrade() -> None:
    with op.batch_alter_table("status_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_claim_at", sa.DateTime(timezone=True), nullable=True))
    for column in PARTIAL:
        name = f"ix_issued_tokens_{column}"
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="issued_tokens")
        op.create_index(
            name, "issued_tokens", [column], sqlite_where=where, postgresql_where=where
        )


def downgrade() -> None:
    for column in PARTIAL:
        name = f"ix_issued_tokens_{column}"
        op.drop_index(name, table_name="issued_tokens")
        op.create_index(name, "issued_tokens", [column])
    # Before this revision a list's counter never passed its size; a downgraded service
    # allocates one index at a time again and only ever compares ``next_idx < size``.
    with op.batch_alter_table("status_lists", schema=None) as batch_op:
        batch_op.drop_column("last_claim_at")
