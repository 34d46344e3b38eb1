"""The audiences a resource server may introspect: ``clients.introspects`` (RFC 7662 §2.2).

A resource server registered with ``introspects`` (a list of audiences) is told only about
tokens meant for one of them; any other token is answered ``{"active": false}``, as
RFC 7662 §2.2 requires for a token "the protected resource is not allowed to introspect".
NULL (not registered) keeps today's behaviour: every token.

Nullable, without a server default, so every existing client keeps its behaviour and no
row is rewritten. Rules revisions written before this revision insert clients without
naming the column (``sts.rules.ops.put_client`` writes it only where it exists), so they
still run before this revision in a fresh ``sts db upgrade``.

Revision ID: 0011_client_introspects
Revises: 0010_client_dpop_bound
Create Date: 2026-11-30 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_client_introspects"
down_revision: str | Sequence[str] | None = "0010_client_dpop_bound"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("introspects", sa.JSON(), nullable=True))


def downgrade() -> None:
    # SQLite rebuilds the table to drop the column (batch mode); the clients are kept.
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("introspects")
