"""Liveness and readiness."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from sts.db import queries
from sts.endpoints import Response
from sts.errors import OAuthError, StartupError
from sts.keys.keyring import KeyRing

log = logging.getLogger(__name__)


def render_health() -> Response:
    return Response(200, {"status": "ok"}, {"Cache-Control": "no-store"})


def render_readiness(session_factory: sessionmaker[Session], keyring: KeyRing) -> Response:
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
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return Response(200 if ready else 503, body, {"Cache-Control": "no-store"})
