"""``sts gc``: forget what can no longer matter.

* lineage (``issued_tokens``) of tokens expired longer than ``lineage_retention``: an
  expired token cannot be used, so its row only serves investigations until then;
* lifted blocks older than the same retention;
* audit records older than ``audit_retention`` (their own, longer, retention);
* status lists that are full (never allocated from again) and whose tokens have all
  expired are retired: no longer served, their ids never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from sts.db import queries
from sts.settings import Settings


@dataclass(frozen=True)
class Collected:
    lineage: int
    lifted_blocks: int
    audit: int
    status_lists: int


def collect_garbage(session: Session, settings: Settings, now: datetime) -> Collected:
    lineage_cutoff = now - timedelta(seconds=settings.lineage_retention)
    return Collected(
        status_lists=queries.retire_spent_status_lists(session, now),
        lineage=queries.delete_expired_lineage(session, lineage_cutoff),
        lifted_blocks=queries.delete_lifted_blocks(session, lineage_cutoff),
        audit=queries.delete_old_audit(session, now - timedelta(seconds=settings.audit_retention)),
    )
