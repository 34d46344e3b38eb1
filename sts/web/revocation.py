"""POST /revoke (RFC 7009), POST /introspect (RFC 7662), GET /statuslists[/<id>]."""

from __future__ import annotations

from flask import Flask, Response, request

from sts.endpoints import introspection, metadata, revocation
from sts.endpoints.metadata import STATUS_LIST_PATH
from sts.services import Services
from sts.status_list import StatusListPublisher, render_status_list_index


def register_revocation_routes(app: Flask, services: Services) -> None:
    from sts.web import auth_header, form_items, to_flask

    publisher = StatusListPublisher()

    @app.post(metadata.REVOCATION_PATH)
    def revocation_endpoint() -> Response:
        result = revocation.handle_revocation(
            services,
            content_type=request.mimetype,
            form=form_items(),
            authorization=auth_header(),
        )
        return to_flask(result)

    @app.post(metadata.INTROSPECTION_PATH)
    def introspection_endpoint() -> Response:
        result = introspection.handle_introspection(
            services,
            content_type=request.mimetype,
            form=form_items(),
            authorization=auth_header(),
        )
        return to_flask(result)

    @app.get(STATUS_LIST_PATH)
    def status_list_index() -> Response:
        return to_flask(render_status_list_index(services))

    @app.get(STATUS_LIST_PATH + "/<int:list_id>")
    def status_list(list_id: int) -> Response:
        return to_flask(publisher.render(services, list_id))
