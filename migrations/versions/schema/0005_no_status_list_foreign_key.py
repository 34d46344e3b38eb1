"""No foreign key from a token's status-list entry to its list.

On PostgreSQL the check of ``issued_tokens.status_list_id`` -> ``status_lists.id`` locked
the row of the list being filled (``FOR KEY SHARE``) in every exchange: a WAL record for
the lock and, with exchanges in parallel, a new MultiXact each time, all on one row.
``python -m bench`` (PostgreSQL, granian, CI JWT, two runs each): PostgreSQL's CPU per
exchange 0.26-0.27 ms with the key, 0.20-0.23 ms without; 1,613-1,666 against
1,763-2,000 exch/s.

It guarded nothing reachable: an exchange takes the list id from its claim of a block
on that very row (``sts.db.status_indexes``), and lists are never deleted, only retired.
The unique index on (status_list_id, status_idx) stays: it is the allocator's safety net.

On SQLite the table is rebuilt (batch mode: copy, drop, rename): 15.5 s for 1,000,000
rows on the project's machine.

Revision ID: 0005_no_status_list_foreign_key
Revises: 0004_fewer_exchange_indexes
Create Date: 2026-11-29 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_no_status_list_foreign_key"
down_revision: str | Sequence[str] | None = "0004_fewer_exchange_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_issued_tokens_status_list_id_status_lists"


def upgrade() -> None:
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(FOREIGN_KEY, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.create_foreign_key(FOREIGN_KEY, "status_lists", ["status_list_id"], ["id"])
