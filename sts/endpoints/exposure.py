"""Exposure reports: anyone holding a leaked sts access token, upstream token or service
credential (a secret scanner, a person who found it in a log) can report it. Possession
is the proof.

1. rate limit per source address (before anything else, so the limit is no oracle), and
   refuse every report while the service-wide budget is spent (whatever it names, so
   that this refusal is no oracle either);
2. find the token: an access token of this STS or a trusted issuer's JWT (signature,
   issuer, audience and expiry verified), or a service credential (hash compared);
3. revoke it and everything derived from it; a credential is also disabled; an upstream
   token, which sts cannot revoke, is blocked from new exchanges and every token minted
   from it (as subject or actor token) revoked; a report that takes the governance lock
   for it (every exchange waits meanwhile) uses one of the budget's reports first, and is
   refused without the lock when none is left; one already blocked uses none;
4. record one audit row: who reported it from where, and what was revoked (never the
   token);
5. answer 202 with the same body whatever the token was: valid, invalid, expired or
   unknown. The response is no oracle for whether a string is a live secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from sts import errors
from sts.audit import AuditEntry, record
from sts.credentials import looks_like_api_key, secret_matches
from sts.db import queries
from sts.db.locks import write_transaction
from sts.endpoints import NO_STORE, Response
from sts.endpoints.revocation import Found, find_service_credential, verified_jwt
from sts.protocol import require_form_encoded
from sts.protocol.exchange import single_values
from sts.ratelimit import GlobalBudget, RateLimiter, source_key
from sts.revocation import revoke_credential, revoke_token, revoke_upstream_token
from sts.services import Services
from sts.tokens.verify import token_fingerprint

log = logging.getLogger(__name__)

EVENT_EXPOSURE = "exposure_report"
ACCEPTED = Response(202, {"status": "accepted"}, dict(NO_STORE))
MAX_NOTE = 200
EXPOSURE_PARAMETERS = frozenset({"token", "found_at"})


class TooManyReports(errors.OAuthError):
    error = "slow_down"
    status_code = 429
    default_description = "Too many reports from this address; retry later."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "60"}


class ReportsOverBudget(TooManyReports):
    """RFC 6585 §4: 429, with Retry-After (RFC 9110 §10.2.3) the seconds until the
    service-wide budget's window ends."""

    default_description = "Too many reports; retry later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(reason="exposure.over_budget")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def find_exposed(services: Services, token: str, now: datetime) -> Found | None:
    """What a reported token is: a service credential (its hash is compared in the
    transaction), an access token of this STS, or a trusted issuer's JWT."""
    if looks_like_api_key(token):
        return find_service_credential(services, token, now)
    verified = verified_jwt(services, token, "reported", now)
    if verified is None:
        return None
    if verified.kind == "sts":
        return Found("access_token", verified.token_id)
    assert verified.issuer is not None  # a trusted issuer's token
    return Found(
        "upstream_token",
        verified.token_id,
        subject=verified.claims["sub"],
        expires_at=verified.expires_at,
        issuer=verified.issuer.issuer,
    )


def handle_exposure_report(
    services: Services,
    limiter: RateLimiter,
    budget: GlobalBudget,
    *,
    content_type: str,
    form: Sequence[tuple[str, str]],
    source_address: str,
    user_agent: str,
) -> Response:
    if not limiter.allow(source_key(source_address)):
        raise TooManyReports(reason="exposure.rate_limited")
    require_form_encoded(content_type)
    params = single_values(form, EXPOSURE_PARAMETERS)
    token = params.get("token")
    if not token:
        raise errors.InvalidRequest("Missing token.")
    where = params.get("found_at", "")[:MAX_NOTE]
    now = services.clock()
    entry = AuditEntry(at=now, event=EVENT_EXPOSURE, decision="info", reason="exposure.unknown")
    entry.subject_token_id = token_fingerprint(token)
    entry.detail = (
        f"reported from {source_address} by {user_agent[:MAX_NOTE]!r}; found at {where!r}"
    )
    retry_after = budget.spent()
    if retry_after is not None:
        refuse_over_budget(services, entry, retry_after)

    def use_budget() -> None:
        # Just before the governance lock: only a report that would take it uses one.
        # Should the budget run out between spent() above and this, this report is refused
        # while one naming nothing would not be: an oracle only at that instant, once per
        # window, and it costs the asker a valid leaked token per try.
        retry_after = budget.take()
        if retry_after is not None:
            raise ReportsOverBudget(retry_after)

    found = find_exposed(services, token, now)
    try:
        with write_transaction(services.session_factory) as session:
            if found is not None and found.kind == "access_token":
                count = revoke_token(session, found.identifier, now)
                entry.subject_token_id = found.identifier
                entry.decision, entry.reason = "allow", "exposure.access_token_revoked"
                entry.detail += f"; revoked {count} token(s)"
            elif found is not None and found.kind == "upstream_token":
                roots = queries.upstream_token_roots(found.identifier, found.subject, found.issuer)
                count = revoke_upstream_token(
                    session,
                    found.identifier,
                    roots,
                    "exposure report",
                    now,
                    found.expires_at,
                    issuer=found.issuer,
                    before_lock=use_budget,
                )
                entry.subject_token_id = found.identifier
                entry.decision, entry.reason = "allow", "exposure.upstream_token_blocked"
                entry.detail += f"; upstream token blocked, revoked {count} token(s)"
            elif found is not None:
                credential = queries.credential_by_key_id(session, found.identifier)
                if credential is not None and secret_matches(token, credential.secret_hash):
                    count = revoke_credential(session, credential, now, use_budget)
                    entry.subject_token_id = "credential:" + credential.name
                    entry.decision, entry.reason = "allow", "exposure.credential_disabled"
                    entry.detail += f"; credential disabled, revoked {count} token(s)"
            record(session, entry)
    except ReportsOverBudget as refusal:  # rolled back: nothing was revoked
        refuse_over_budget(services, entry, refusal.retry_after)
    except SQLAlchemyError as exc:
        # Fail closed the only way that matters here: tell the reporter to retry.
        log.error("exposure report not processed: %s", type(exc).__name__)
        raise errors.TemporarilyUnavailable(reason="database.unavailable") from None
    log.warning(
        "exposure report: %s (%s) from %s", entry.reason, entry.subject_token_id, source_address
    )
    return ACCEPTED


def refuse_over_budget(services: Services, entry: AuditEntry, retry_after: int) -> NoReturn:
    """429 with Retry-After, audited (``exposure.over_budget``): the service-wide budget of
    reports that take the governance lock is spent for this window. Also answered to a
    report that names nothing, so that a spent budget tells no one what a string is. The
    refusal is answered even when it cannot be audited (the database is down)."""
    entry.decision, entry.reason = "deny", "exposure.over_budget"
    try:
        with write_transaction(services.session_factory) as session:
            record(session, entry)
    except SQLAlchemyError as exc:
        log.error("exposure report refusal not audited: %s", type(exc).__name__)
    log.warning("exposure report refused: budget spent (%s)", entry.subject_token_id)
    raise ReportsOverBudget(retry_after)
