"""``sts gc``: forget what can no longer matter.

* lineage (``issued_tokens``) of tokens expired longer than ``lineage_retention``: an
  expired token cannot be used, so its row only serves investigations until then;
* blocks lifted, or past their own expiry (a block on one upstream token: its ``exp``),
  longer than the same retention (and than the clock leeway, during which an exchange
  still accepts the token);
* audit records older than ``audit_retention`` (their own, longer, retention);
* used client assertions and DPoP proofs whose own expiry (plus the clock leeway)
  refuses them anyway: their record guards against a replay only until then;
* status lists that are full (never allocated from again) and whose tokens have all
  expired are retired: no longer served, their ids never reused.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from sts.db import queries
from sts.settings import Settings

# Rows deleted per write transaction. Each transaction holds SQLite's write lock, and
# every exchange waits for it: one of 5,000 rows takes tens of milliseconds, where one
# transaction for everything took seconds (600,000 expired tokens: 3.5 s, 2,000,000 old
# audit records: 4.1 s; bench/README, seventh sitting). On PostgreSQL, short transactions
# keep the WAL and VACUUM's work in small steps.
GC_BATCH_ROWS = 5000

# A write transaction, committed when the block ends (sts.db.locks.begin_write on SQLite).
WriteTransaction = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class Collected:
    lineage: int
    blocks: int  # lifted or expired
    audit: int
    status_lists: int
    replay_records: int = 0  # used client assertions and DPoP proofs


def collect_garbage(
    write: WriteTransaction, settings: Settings, now: datetime, batch: int = GC_BATCH_ROWS
) -> Collected:
    """Everything past its retention, in write transactions of at most ``batch`` deleted
    rows each, so that exchanges get the write lock between them."""
    # Never within the leeway: a relying party may still accept a token that long after
    # its exp, and its lineage row is what keeps it revoked (its status-list bit).
    lineage_keep = max(settings.lineage_retention, settings.clock_leeway)
    lineage_cutoff = now - timedelta(seconds=lineage_keep)
    audit_cutoff = now - timedelta(seconds=settings.audit_retention)
    # One more second: joserfc compares a fractional ``exp`` with whole seconds, so an
    # assertion stays acceptable up to a second past its exp plus the leeway.
    replay_cutoff = now - timedelta(seconds=settings.clock_leeway + 1)
    with write() as session:
        status_lists = queries.retire_spent_status_lists(session, now)
        blocks = queries.delete_spent_blocks(session, lineage_cutoff)
        queries.detach_children_of_expired(session, lineage_cutoff)
    return Collected(
        status_lists=status_lists,
        blocks=blocks,
        lineage=_in_batches(
            write, lambda s, n: queries.delete_expired_lineage(s, lineage_cutoff, n), batch
        ),
        audit=_in_batches(write, lambda s, n: queries.delete_old_audit(s, audit_cutoff, n), batch),
        replay_records=_in_batches(
            write, lambda s, n: queries.delete_spent_replay_records(s, replay_cutoff, n), batch
        ),
    )


def _in_batches(
    write: WriteTransaction, delete_up_to: Callable[[Session, int], int], batch: int
) -> int:
    """``delete_up_to(session, batch)``, each time in its own transaction, until one
    deletes nothing; the rows deleted in all. It ends: the cutoffs are fixed, so the rows
    past them only become fewer (a short batch of lineage can leave parents behind, whose
    children it has just deleted)."""
    deleted = 0
    while True:
        with write() as session:
            count = delete_up_to(session, batch)
        if count == 0:
            return deleted
        deleted += count
