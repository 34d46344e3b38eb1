"""Flask glue: routes turn requests into plain data; one handler renders every error."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from sts import errors
from sts.endpoints import Response as EndpointResponse
from sts.endpoints import health, jwks, metadata
from sts.protocol import FORM_MEDIA_TYPE
from sts.services import Services

log = logging.getLogger("sts.web")


def json_bytes(body: dict[str, Any]) -> bytes:
    """Every JSON body sts sends: compact, keys sorted, ASCII (as Flask's provider)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def to_flask(result: EndpointResponse) -> Response:
    if result.raw is not None:
        raw = Response(result.raw, status=result.status)
        raw.headers.update(result.headers)
        return raw
    response = Response(json_bytes(result.body), status=result.status, mimetype=JSON_MEDIA_TYPE)
    for name, value in result.headers.items():
        response.headers[name] = value
    return response


def error_response(error: errors.OAuthError) -> EndpointResponse:
    """The one place errors become responses (RFC 6749 §5.2 shape, never cached)."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **error.headers()}
    return EndpointResponse(error.status_code, error.body(), headers)


def render_error(error: errors.OAuthError) -> Response:
    return to_flask(error_response(error))


def oauth_error_for(exc: Exception, method: str, path: str) -> errors.OAuthError:
    """What the caller is told about any exception; unexpected ones are logged here."""
    if isinstance(exc, errors.OAuthError):
        return exc
    if isinstance(exc, MethodNotAllowed):
        return errors.MethodNotAllowed(sorted(exc.valid_methods or []))
    if isinstance(exc, NotFound):
        return errors.NotFound()
    if isinstance(exc, HTTPException):
        generic = errors.InvalidRequest(exc.description or "The request is invalid.")
        generic.status_code = exc.code or 400  # type: ignore[misc]
        return generic
    if isinstance(exc, SQLAlchemyError):
        # Fail closed: the database is down or refused; the caller may retry.
        log.error("database error on %s %s: %s", method, path, type(exc).__name__)
        return errors.TemporarilyUnavailable()
    log.exception("unhandled error on %s %s", method, path)
    return errors.ServerError()


def handle_exception(exc: Exception) -> Response:
    return render_error(oauth_error_for(exc, request.method, request.path))


def register_web(app: Flask, services: Services) -> None:
    settings = services.settings

    @app.get(metadata.METADATA_PATH)
    def authorization_server_metadata() -> Response:
        return to_flask(metadata.render_metadata(settings))

    inserted = metadata.metadata_path_for(settings.issuer)
    if inserted != metadata.METADATA_PATH:
        app.add_url_rule(inserted, "path_issuer_metadata", authorization_server_metadata)

    @app.get(metadata.JWKS_PATH)
    def jwks_document() -> Response:
        return to_flask(jwks.render_jwks(services.keyring, settings.jwks_cache_max_age))

    @app.get("/healthz")
    def healthz() -> Response:
        return to_flask(health.render_health())

    @app.get("/readyz")
    def readyz() -> Response:
        budget = app.extensions.get("sts_exposure_budget")
        return to_flask(
            health.render_readiness(
                services.session_factory,
                services.keyring,
                services.trust,
                budget.redis_status if budget is not None else lambda: None,
            )
        )

    from sts.web.token import register_token_routes

    register_token_routes(app, services)
    from sts.web.revocation import register_revocation_routes

    register_revocation_routes(app, services)
    app.register_error_handler(Exception, handle_exception)


MAX_FORM_FIELDS = 64  # an exchange has about ten; more is abuse, not a request
MAX_BODY_BYTES = 64 * 1024  # tokens are small; refuse huge bodies (413)
JSON_MEDIA_TYPE = "application/json"


def form_items() -> list[tuple[str, str]]:
    """Every (name, value) of a form body, duplicates kept so the parser can refuse them.

    The body is read once (``MAX_CONTENT_LENGTH`` applies: 413 beyond it) and parsed by
    the standard library: Werkzeug's form parser, built for multipart, cost three times
    as much on every exchange for the same result. Other media types yield no fields
    (the endpoints refuse them). RFC 6749 Appendix B: UTF-8, refused when invalid."""
    return parse_form(request.mimetype, _body())


def _body() -> bytes:
    """The request body, at most :data:`MAX_BODY_BYTES` (413 beyond). Werkzeug refuses a
    declared ``Content-Length`` over the limit, but cuts a chunked body (no length; the
    server marks its input terminated) at the limit without a word: the request would
    then be judged on its first 64 KiB, and a proxy or firewall that read all of it would
    have seen other parameters. So such a body is read here, one byte past the limit."""
    environ = request.environ
    if request.content_length is not None or not environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES and (chunk := stream.read(MAX_BODY_BYTES + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def parse_form(mimetype: str, body: bytes) -> list[tuple[str, str]]:
    """A ``application/x-www-form-urlencoded`` body as (name, value) pairs, or
    invalid_request; no fields for any other media type (see :func:`form_items`)."""
    if mimetype != FORM_MEDIA_TYPE:
        return []
    try:
        return parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise errors.InvalidRequest(
            "The request body is not a valid UTF-8 form.", reason="request.form"
        ) from None
    except ValueError:  # more than max_num_fields
        raise errors.InvalidRequest(
            f"The request has more than {MAX_FORM_FIELDS} parameters.", reason="request.form"
        ) from None


def auth_header() -> str | None:
    return request.headers.get("Authorization")


def json_body(result: dict[str, Any]) -> Response:
    return to_flask(EndpointResponse(200, result))
