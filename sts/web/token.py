"""POST /token: a Flask route, and the same endpoint served straight from the WSGI environ.

Every exchange crosses this endpoint, and Flask/Werkzeug's request and response objects
cost 0.3-0.4 ms of an exchange's ~1.5 ms of CPU in process (``bench/README.md``). For the
ordinary request (a declared ``Content-Length`` within the body limit) :class:`DirectToken`
reads the environ itself and calls the same endpoint function, renders its result or error
through the same functions as the Flask app (``sts.web``), and so answers byte for byte as
the route would (``tests/integration/test_token_direct.py`` compares them). Anything else (a
body without a length, an oversized one, another method or path) goes on to Flask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request
from werkzeug.http import HTTP_STATUS_CODES, parse_options_header

from sts import errors
from sts.endpoints import Response as EndpointResponse
from sts.endpoints import metadata, token
from sts.services import Services
from sts.web import (
    JSON_MEDIA_TYPE,
    MAX_BODY_BYTES,
    auth_header,
    error_response,
    form_items,
    json_bytes,
    oauth_error_for,
    parse_form,
    to_flask,
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def register_token_routes(app: Flask, services: Services) -> None:
    @app.post(metadata.TOKEN_PATH)
    def token_endpoint() -> Response:
        result = token.handle_token_request(
            services,
            content_type=request.mimetype,
            form=form_items(),
            authorization=auth_header(),
            dpop=request.environ.get("HTTP_DPOP"),
        )
        return to_flask(result)

    app.wsgi_app = DirectToken(app.wsgi_app, services)  # type: ignore[method-assign]


class DirectToken:
    """WSGI middleware: POST /token with a declared length, without Flask (module doc)."""

    def __init__(self, app: WsgiApp, services: Services) -> None:
        self.app = app
        self.services = services

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = self._direct_body_length(environ)
        if length is None:
            return self.app(environ, start_response)
        try:
            result = self._handle(environ, length)
        except Exception as exc:  # rendered exactly as the Flask error handler does
            error = oauth_error_for(exc, "POST", metadata.TOKEN_PATH)
            result = error_response(error)
        return self._respond(result, start_response)

    @staticmethod
    def _direct_body_length(environ: dict[str, Any]) -> int | None:
        """The body's length when this request is served here; None: Flask serves it."""
        if environ.get("PATH_INFO") != metadata.TOKEN_PATH:
            return None
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        declared = environ.get("CONTENT_LENGTH", "")
        # ASCII digits only: str.isdigit() also accepts other scripts' digits.
        if not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY_BYTES:
            return None  # chunked, absent or too long: Werkzeug's handling (and its 413)
        return int(declared)

    def _handle(self, environ: dict[str, Any], length: int) -> EndpointResponse:
        # Werkzeug's own parse, so the media type compares as request.mimetype would.
        mimetype = parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower()
        try:
            body = environ["wsgi.input"].read(length) if length else b""
        except OSError:  # the client went away mid-body (Werkzeug: 400 as well)
            body = b""
        if len(body) != length:
            raise errors.InvalidRequest("The request body is incomplete.", reason="request.form")
        return token.handle_token_request(
            self.services,
            content_type=mimetype,
            form=parse_form(mimetype, body),
            authorization=environ.get("HTTP_AUTHORIZATION"),
            dpop=environ.get("HTTP_DPOP"),
        )

    @staticmethod
    def _respond(result: EndpointResponse, start_response: StartResponse) -> list[bytes]:
        assert result.raw is None  # the token endpoint answers JSON only
        payload = json_bytes(result.body)
        headers = [
            ("Content-Type", JSON_MEDIA_TYPE),
            ("Content-Length", str(len(payload))),
            *result.headers.items(),
        ]
        start_response(f"{result.status} {HTTP_STATUS_CODES[result.status].upper()}", headers)
        return [payload]
