"""Audit: one record per decision. Tokens appear only as their jti or a SHA-256 hash."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from sts.db import queries

EVENT_TOKEN_EXCHANGE = "token_exchange"


@dataclass
class AuditEntry:
    """Filled in step by step as the exchange learns facts; written once."""

    at: datetime
    event: str = EVENT_TOKEN_EXCHANGE
    decision: str = "deny"
    reason: str = "unknown"
    client_id: str | None = None
    subject: str | None = None
    subject_issuer: str | None = None
    subject_token_id: str | None = None
    actor: str | None = None
    requested_audiences: list[str] | None = None
    requested_scope: str | None = None
    rule_id: int | None = None
    rule_version: int | None = None
    issued_jti: str | None = None
    detail: str | None = None

    def values(self) -> dict[str, Any]:
        # Shallow on purpose (dataclasses.asdict deep-copies): the values are immutable.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(AuditEntry))


def record(session: Session, entry: AuditEntry) -> None:
    queries.record_audit(session, entry.values())


def storable_text(text: str) -> str:
    """Free text as an audit row can hold it: a refusal's detail may quote what the caller
    sent (an unverified header, a claim), so a NUL or a lone surrogate is escaped (either
    would fail the insert: sts.tokens.verify.unstorable_text)."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
