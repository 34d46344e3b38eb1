"""Flask glue: routes turn requests into plain data; one handler renders every error."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, json, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from sts import errors
from sts.endpoints import Response as EndpointResponse
from sts.endpoints import health, jwks, metadata
from sts.protocol import FORM_MEDIA_TYPE
from sts.services import Services

log = logging.getLogger("sts.web")


def to_flask(result: EndpointResponse) -> Response:
    if result.raw is not None:
        raw = Response(result.raw, status=result.status)
        raw.headers.update(result.headers)
        return raw
    response = Response(
        json.dumps(result.body, separators=(",", ":")),
        status=result.status,
        mimetype="application/json",
    )
    for name, value in result.headers.items():
        response.headers[name] = value
    return response


def render_error(error: errors.OAuthError) -> Response:
    """The one place errors become responses (RFC 6749 §5.2 shape, never cached)."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **error.headers()}
    return to_flask(EndpointResponse(error.status_code, error.body(), headers))


def handle_exception(exc: Exception) -> Response:
    if isinstance(exc, errors.OAuthError):
        return render_error(exc)
    if isinstance(exc, MethodNotAllowed):
        return render_error(errors.MethodNotAllowed(sorted(exc.valid_methods or [])))
    if isinstance(exc, NotFound):
        return render_error(errors.NotFound())
    if isinstance(exc, HTTPException):
        generic = errors.InvalidRequest(exc.description or "The request is invalid.")
        generic.status_code = exc.code or 400  # type: ignore[misc]
        return render_error(generic)
    if isinstance(exc, SQLAlchemyError):
        # Fail closed: the database is down or refused; the caller may retry.
        log.error("database error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return render_error(errors.TemporarilyUnavailable())
    log.exception("unhandled error on %s %s", request.method, request.path)
    return render_error(errors.ServerError())


def register_web(app: Flask, services: Services) -> None:
    settings = services.settings

    @app.get(metadata.METADATA_PATH)
    def authorization_server_metadata() -> Response:
        return to_flask(metadata.render_metadata(settings))

    @app.get(metadata.JWKS_PATH)
    def jwks_document() -> Response:
        return to_flask(jwks.render_jwks(services.keyring, settings.jwks_cache_max_age))

    @app.get("/healthz")
    def healthz() -> Response:
        return to_flask(health.render_health())

    @app.get("/readyz")
    def readyz() -> Response:
        return to_flask(health.render_readiness(services.session_factory, services.keyring))

    from sts.web.token import register_token_routes

    register_token_routes(app, services)
    from sts.web.revocation import register_revocation_routes

    register_revocation_routes(app, services)
    app.register_error_handler(Exception, handle_exception)


MAX_FORM_FIELDS = 64  # an exchange has about ten; more is abuse, not a request


def form_items() -> list[tuple[str, str]]:
    """Every (name, value) of a form body, duplicates kept so the parser can refuse them.

    The body is read once (``MAX_CONTENT_LENGTH`` applies: 413 beyond it) and parsed by
    the standard library: Werkzeug's form parser, built for multipart, cost three times
    as much on every exchange for the same result. Other media types yield no fields
    (the endpoints refuse them). RFC 6749 Appendix B: UTF-8, refused when invalid."""
    if request.mimetype != FORM_MEDIA_TYPE:
        return []
    body = request.get_data(cache=False)
    try:
        return parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise errors.InvalidRequest(
            "The request body is not a valid UTF-8 form.", reason="request.form"
        ) from None


def auth_header() -> str | None:
    return request.headers.get("Authorization")


def json_body(result: dict[str, Any]) -> Response:
    return to_flask(EndpointResponse(200, result))
