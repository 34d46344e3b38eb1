"""A client that always uses DPoP: ``clients.dpop_bound_access_tokens`` (RFC 9449 §5.2).

A client registered with ``dpop_bound_access_tokens: true`` is refused a token without a
DPoP proof, whatever the rule it matches allows: its tokens are always bound to a key it
holds, never bearer tokens that anyone who copies them from a log can use.

NOT NULL with a server default of false, so every existing client keeps its behaviour
and no row is rewritten on PostgreSQL (a constant default is stored in the catalogue).
Rules revisions written before this revision insert clients without naming the column
(``sts.rules.ops.put_client`` writes it only where it exists), so they still run before
this revision in a fresh ``sts db upgrade``.

Revision ID: 0010_client_dpop_bound
Revises: 0009_dpop_proofs
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_client_dpop_bound"
down_revision: str | Sequence[str] | None = "0009_dpop_proofs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "dpop_bound_access_tokens",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )


def downgrade() -> None:
    # SQLite rebuilds the table to drop the column (batch mode); the clients are kept.
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("dpop_bound_access_tokens")
