"""Token status lists: index allocation (in the exchange's transaction) and publication.

Indexes come from ``status_lists.next_idx``, advanced by a block at a time under a row
lock inside an exchange's transaction (sts.db.status_indexes): two replicas can never hand
out the same index, an index is never reused while its list is served, and a full list is
never written again (a new one is started). The unique (list, index) index on
``issued_tokens`` is the safety net.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sts import errors
from sts.db import queries
from sts.db.exchange_store import ExchangeTransaction
from sts.endpoints import Response
from sts.tokens.status_list import (
    STATUS_LIST_MEDIA_TYPE,
    build_status_list_claims,
    mint_status_list_token,
    status_claim,
    status_list_uri,
)

if TYPE_CHECKING:
    from sts.keys.keyring import ActiveKey
    from sts.services import Services


@dataclass(frozen=True)
class TokenStatus:
    list_id: int
    idx: int
    claim: dict[str, Any]


def allocate_token_status(
    transaction: ExchangeTransaction, issuer: str, size: int, now: datetime
) -> TokenStatus:
    """A free entry: from a block this process holds, else from a new block of the open
    list (a new list when none is open)."""
    taken = transaction.status_index()
    if taken is None:
        if not transaction.claim_status_block(now):  # none open yet, or the last one is full
            transaction.add_status_list(size, now)
            claimed = transaction.claim_status_block(now)
            assert claimed
        taken = transaction.status_index()
        assert taken is not None
    list_id, idx = taken
    return TokenStatus(list_id, idx, status_claim(status_list_uri(issuer, list_id), idx))


@dataclass(frozen=True)
class _Signed:
    token: str
    signed_at: datetime
    kid: str


class StatusListPublisher:
    """Serves each list's signed token, re-signing at most once per ``ttl`` per process:
    a revocation reaches every replica's published list within that lifetime. A list
    signed by a key that is no longer the active one (rotated, or compromised and gone
    from the JWKS) is signed again at once."""

    def __init__(self) -> None:
        self._signed: dict[int, _Signed] = {}
        self._lock = threading.Lock()

    def render(self, services: Services, list_id: int) -> Response:
        settings = services.settings
        now = services.clock()
        ttl = settings.status_list_ttl
        key = services.keyring.signing_key()
        with self._lock:
            cached = self._signed.get(list_id)
        if (
            cached is None
            or cached.kid != key.kid
            or now - cached.signed_at >= timedelta(seconds=ttl)
        ):
            cached = _Signed(self._sign(services, list_id, now, key), now, key.kid)
            with self._lock:
                self._signed[list_id] = cached
        remaining = ttl - int((now - cached.signed_at).total_seconds())
        headers = {
            "Content-Type": STATUS_LIST_MEDIA_TYPE,
            "Cache-Control": f"public, max-age={max(remaining, 0)}",
        }
        return Response(200, {}, headers, raw=cached.token)

    def _sign(self, services: Services, list_id: int, now: datetime, key: ActiveKey) -> str:
        settings = services.settings
        with services.session_factory() as session:
            status_list = queries.served_status_list(session, list_id)
            if status_list is None:
                raise errors.NotFound(reason="status_list.unknown")
            invalid = queries.revoked_status_indexes(session, list_id)
            size = status_list.size
        claims = build_status_list_claims(
            uri=status_list_uri(settings.issuer, list_id),
            size=size,
            invalid=invalid,
            now=now,
            ttl=settings.status_list_ttl,
            # A snapshot is of no use after the longest-lived token it could describe.
            lifetime=max(settings.status_list_ttl, settings.max_token_ttl),
        )
        return mint_status_list_token(claims, key, settings.issuer)


def render_status_list_index(services: Services) -> Response:
    """draft-ietf-oauth-status-list "Status List Aggregation": every served list's URI."""
    with services.session_factory() as session:
        ids = queries.served_status_list_ids(session)
    uris = [status_list_uri(services.settings.issuer, list_id) for list_id in ids]
    ttl = services.settings.status_list_ttl
    return Response(200, {"status_lists": uris}, {"Cache-Control": f"public, max-age={ttl}"})
