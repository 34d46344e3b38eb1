"""Revocation and token status lists.

Adds ``status_lists`` (draft-ietf-oauth-status-list: one row per list, with the index
allocation counter) and ``issued_tokens.status_list_id`` with a unique (list, index)
index, so an index is never given to two tokens of one list.

Revision ID: 0002_revocation
Revises: 0001_baseline
Create Date: 2026-11-28 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_revocation"
down_revision: str | Sequence[str] | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "status_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("next_idx", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_lists")),
    )
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_list_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_issued_tokens_status_list_id_status_lists"),
            "status_lists",
            ["status_list_id"],
            ["id"],
        )
        batch_op.create_index(
            "ix_issued_tokens_status", ["status_list_id", "status_idx"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_issued_tokens_status")
        batch_op.drop_constraint(
            batch_op.f("fk_issued_tokens_status_list_id_status_lists"), type_="foreignkey"
        )
        batch_op.drop_column("status_list_id")
    op.drop_table("status_lists")
