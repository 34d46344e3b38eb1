"""The actor's lineage on every issued token: revocation reaches the tokens an agent
acted in.

RFC 8693 §4.1: the ``act`` claim names the actor, a party to the token. A token minted
with an sts token or a service credential as ``actor_token`` is derived from it as much
as from its subject token, but only the subject's side was recorded, so revoking the
actor's token or credential (or ``sts revoke --issuer`` of the actor's issuer) left it
active. Three nullable columns, set only when an actor token was presented:

* ``actor_parent_jti``: the sts token presented as actor (the revocation walks follow it
  as they follow ``parent_jti``);
* ``actor_credential_id``: the service credential presented as actor;
* ``actor_issuer``: the actor token's issuer, as the exchange's block check names it.

The two that revocation looks up by value get partial indexes (rows where they are set),
so an exchange without an actor writes no index page more. Tokens issued before this
revision keep NULL (the lineage of their actor was not recorded): they expire within
``STS_MAX_TOKEN_TTL``. Adding nullable columns rewrites no row, on SQLite nor
PostgreSQL.

Revision ID: 0006_actor_lineage
Revises: 0005_no_status_list_foreign_key
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_actor_lineage"
down_revision: str | Sequence[str] | None = "0005_no_status_list_foreign_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("actor_parent_jti", sa.String(length=64)),
    ("actor_credential_id", sa.Integer()),
    ("actor_issuer", sa.String(length=2048)),
)
PARTIAL = ("actor_parent_jti", "actor_credential_id")


def upgrade() -> None:
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    for column in PARTIAL:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            f"ix_issued_tokens_{column}",
            "issued_tokens",
            [column],
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for column in PARTIAL:
        op.drop_index(f"ix_issued_tokens_{column}", table_name="issued_tokens")
    # SQLite rebuilds the table to drop columns (batch mode); the lineage rows are kept.
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        for name, _type in reversed(COLUMNS):
            batch_op.drop_column(name)
