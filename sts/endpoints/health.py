"""Liveness and readiness."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from sts.db import queries
from sts.endpoints import Response
from sts.errors import OAuthError, StartupError
from sts.keys.keyring import KeyRing
from sts.trust import TrustConfigCache

log = logging.getLogger(__name__)


def render_health() -> Response:
    return Response(200, {"status": "ok"}, {"Cache-Control": "no-store"})


def render_readiness(
    session_factory: sessionmaker[Session],
    keyring: KeyRing,
    trust: TrustConfigCache,
    redis_status: Callable[[], str | None] = lambda: None,
) -> Response:
    checks = {"database": "ok", "signing_key": "ok"}
    try:
        with session_factory() as session:
            queries.ping(session)
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    try:
        keyring.signing_key()
    except (OAuthError, StartupError, SQLAlchemyError):
        checks["signing_key"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    # Reported, never a reason to take sts out of service: an invalid rule or key set
    # already fails closed for its own part (a deny rule denies everything), and every
    # instance would read the same configuration, so all of them would leave together.
    checks.update(_trust_checks(trust))
    # Reported only, as the trust checks: without Redis, service-wide limits are counted
    # per process (sts.ratelimit.GlobalBudget), and sts serves as before.
    redis = redis_status()
    if redis is not None:
        checks["redis"] = redis
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return Response(200 if ready else 503, body, {"Cache-Control": "no-store"})


def _trust_checks(trust: TrustConfigCache) -> dict[str, str]:
    try:
        config = trust.current()
    except SQLAlchemyError:
        return {"rules": "unavailable", "key_sets": "unavailable"}
    return {
        "rules": describe_invalid(config.invalid_rules),
        "key_sets": describe_invalid(config.invalid_key_sets),
    }


def describe_invalid(names: tuple[str, ...]) -> str:
    return f"invalid: {', '.join(names)}" if names else "ok"
