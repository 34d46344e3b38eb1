"""Blocks that name one upstream token end with it: ``revocations.expires_at``.

An exposure report of a leaked upstream JWT stores a block on that token (revision 0007),
one row per reported token, from a public endpoint. The token cannot be exchanged after
its ``exp`` (plus the clock leeway) whether or not the block exists, so the block records
that time (from the verified token) and ``sts gc`` deletes it once the lineage retention
has passed, as it deletes lifted blocks. NULL for every other block, and for a block
stored by an operator from a token id (nothing verified the expiry): those stay until
lifted. A nullable column: no row is rewritten.

Revision ID: 0008_block_expiry
Revises: 0007_upstream_token_lineage
Create Date: 2026-11-30 03:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_block_expiry"
down_revision: str | Sequence[str] | None = "0007_upstream_token_lineage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop the column (batch mode); the blocks are kept.
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
