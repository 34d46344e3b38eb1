"""DPoP (RFC 9449): the proofs already used, and the key each token is bound to.

``dpop_proofs`` (§11.1):

A DPoP proof (RFC 9449) is accepted for ``STS_DPOP_PROOF_MAX_AGE`` seconds after its
``iat``; within that window, its ``jti`` is recorded in the exchange's transaction, and a
second request with the same proof inserts nothing and is refused. The key is (the
proof key's thumbprint, jti): the jti is the proof's own, unique only per key. ``sts gc``
deletes rows past ``expires_at``, when ``iat`` alone refuses the proof.

``issued_tokens.dpop_jkt``: the thumbprint in the token's ``cnf.jkt`` (§6.1), so that
``sts revoke --dpop-key`` finds every token bound to a key that has leaked. NULL for a
bearer token; its index is partial (``IS NOT NULL``), so a bearer token's insert writes
no entry. A nullable column: no row is rewritten.

Revision ID: 0009_dpop_proofs
Revises: 0008_block_expiry
Create Date: 2026-11-30 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_dpop_proofs"
down_revision: str | Sequence[str] | None = "0008_block_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dpop_proofs",
        sa.Column("jkt", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jkt", "jti", name=op.f("pk_dpop_proofs")),
    )
    with op.batch_alter_table("dpop_proofs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dpop_proofs_expires_at"), ["expires_at"], unique=False
        )
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    where = sa.text("dpop_jkt IS NOT NULL")
    op.create_index(
        "ix_issued_tokens_dpop_jkt",
        "issued_tokens",
        ["dpop_jkt"],
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_issued_tokens_dpop_jkt", table_name="issued_tokens")
    # SQLite rebuilds the table to drop the column (batch mode); the lineage rows are kept.
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.drop_column("dpop_jkt")
    with op.batch_alter_table("dpop_proofs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dpop_proofs_expires_at"))
    op.drop_table("dpop_proofs")
