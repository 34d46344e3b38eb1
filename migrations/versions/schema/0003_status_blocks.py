"""Status-list indexes claimed in blocks.

Adds ``status_lists.last_claim_at``: when a process last claimed a block of indexes from
the list (sts.db.status_indexes). ``sts gc`` retires a full list only well after its last
claim, so no process can still be holding indexes of a list that is no longer served.
Existing lists get NULL (no block was ever claimed from them).

Revision ID: 0003_status_blocks
Revises: 0002_revocation
Create Date: 2026-11-29 03:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_status_blocks"
down_revision: str | Sequence[str] | None = "0002_revocation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("status_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_claim_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Before this revision a list's counter never passed its size; a downgraded service
    # allocates one index at a time again and only ever compares ``next_idx < size``.
    with op.batch_alter_table("status_lists", schema=None) as batch_op:
        batch_op.drop_column("last_claim_at")
