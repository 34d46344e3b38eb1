"""POST /token."""

from __future__ import annotations

from flask import Flask, Response, request

from sts.endpoints import metadata, token
from sts.services import Services


def register_token_routes(app: Flask, services: Services) -> None:
    from sts.web import auth_header, form_items, to_flask

    @app.post(metadata.TOKEN_PATH)
    def token_endpoint() -> Response:
        result = token.handle_token_request(
            services,
            content_type=request.mimetype,
            form=form_items(),
            authorization=auth_header(),
        )
        return to_flask(result)
