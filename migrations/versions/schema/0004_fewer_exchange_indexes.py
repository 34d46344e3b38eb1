"""Fewer index pages written per exchange: no index on a token's key, rule or audit row.

Every index on ``issued_tokens`` and ``audit_log`` is one more B-tree page written (and,
on SQLite, one more WAL frame) by every exchange. Three of them served no query on the
request path:

* ``ix_issued_tokens_kid``: read when a signing key is compromised. Every token issued
  while a key was active carries it, so that query matches most of the table and the
  planner scans it anyway.
* ``ix_issued_tokens_rule``: read by ``sts revoke --rule``, which likewise matches a large
  share of the table (live tokens and those expired within the lineage retention).
* ``ix_audit_log_issued_jti``: read by nothing in sts. An operator looking up a token's
  audit row narrows it by ``at`` first (the jti's first 12 hex digits are its issuance
  time in milliseconds), which ``ix_audit_log_at`` serves.

Measured (bench/README, seventh sitting): ``python -m bench.compare``, SQLite, granian:
1.05-1.10x exchanges/s.

Revision ID: 0004_fewer_exchange_indexes
Revises: 0003_exchange_writes
Create Date: 2026-11-29 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_fewer_exchange_indexes"
down_revision: str | Sequence[str] | None = "0003_exchange_writes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns), as revision 0001 created them.
DROPPED = (
    ("ix_issued_tokens_kid", "issued_tokens", ["kid"]),
    ("ix_issued_tokens_rule", "issued_tokens", ["rule_id", "rule_version"]),
    ("ix_audit_log_issued_jti", "audit_log", ["issued_jti"]),
)


def upgrade() -> None:
    for name, table, _columns in DROPPED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in DROPPED:
        op.create_index(name, table, columns)
