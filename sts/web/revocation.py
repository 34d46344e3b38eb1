"""POST /revoke (RFC 7009), POST /introspect (RFC 7662), GET /statuslists[/<id>]."""

from __future__ import annotations

from flask import Flask, Response, request

from sts.endpoints import exposure, introspection, metadata, revocation
from sts.endpoints.metadata import STATUS_LIST_PATH
from sts.ratelimit import GlobalBudget, RateLimiter, redis_client
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

    settings = services.settings
    limiter = RateLimiter(settings.exposure_rate_limit, window=60.0)
    app.extensions["sts_exposure_limiter"] = limiter
    budget = GlobalBudget(
        settings.exposure_global_limit,
        window=60.0,
        redis=redis_client(settings.redis_url) if settings.redis_url else None,
        key="sts:exposure-reports:" + settings.issuer,
    )
    app.extensions["sts_exposure_budget"] = budget

    @app.post(metadata.EXPOSURE_PATH)
    def exposure_report_endpoint() -> Response:
        result = exposure.handle_exposure_report(
            services,
            limiter,
            budget,
            content_type=request.mimetype,
            form=form_items(),
            source_address=request.remote_addr or "unknown",
            user_agent=request.headers.get("User-Agent", ""),
        )
        return to_flask(result)

    @app.get(STATUS_LIST_PATH)
    def status_list_index() -> Response:
        return to_flask(render_status_list_index(services))

    # status_lists.id is a 32-bit INTEGER: a larger id names no list (and PostgreSQL would
    # refuse to compare it), so the route does not match it: 404.
    @app.get(STATUS_LIST_PATH + f"/<int(min=1, max={2**31 - 1}):list_id>")
    def status_list(list_id: int) -> Response:
        return to_flask(publisher.render(services, list_id))
