"""A leaked upstream token is found wherever it was presented, and can be blocked.

``sts exposure`` and exposure reports find what a leaked upstream token (a CI OIDC token,
an agent's JWT) was exchanged for, revoke it, and block the token from new exchanges.
That lookup must see the token on either side of an exchange (RFC 8693 §4.1: the actor
is a party to the token), and, as it runs holding the governance lock exclusively (every
exchange waits for it), not scan the table: ``actor_token_id`` is the actor token's id
(its ``jti``, or ``sha256:`` of it), as ``subject_token_id`` names the subject token's
since revision 0001; NULL without an actor token, with a partial index (an exchange
without an actor writes no page of it). The subject side is found through
``ix_issued_tokens_subject`` (the leaked token's ``sub``), not an index of its own, which
every exchange would write.

Tokens issued before this revision have no ``actor_token_id``: a leaked upstream token
they were minted with as *actor* is not found for them (they expire within
``STS_MAX_TOKEN_TTL``). A block on an upstream token is a ``revocations`` row of kind
``upstream_token`` (``kind`` is a VARCHAR(16): no schema change).

Revision ID: 0007_upstream_token_lineage
Revises: 0006_actor_lineage
Create Date: 2026-11-30 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_upstream_token_lineage"
down_revision: str | Sequence[str] | None = "0006_actor_lineage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor_token_id", sa.String(length=255), nullable=True))
    where = sa.text("actor_token_id IS NOT NULL")
    op.create_index(
        "ix_issued_tokens_actor_token_id",
        "issued_tokens",
        ["actor_token_id"],
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_issued_tokens_actor_token_id", table_name="issued_tokens")
    # SQLite rebuilds the table to drop the column (batch mode); the lineage rows are kept.
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.drop_column("actor_token_id")
