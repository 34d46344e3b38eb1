"""The token endpoint (RFC 6749 §3.2), as a short pipeline:

1. check the request shape (form-encoded POST) and parse the form once;
2. dispatch on ``grant_type``: each grant module does its own part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sts import errors
from sts.endpoints import Response
from sts.grants import token_exchange
from sts.protocol import GRANT_TOKEN_EXCHANGE, refuse_nul, require_form_encoded
from sts.protocol.exchange import single_values
from sts.services import Services

# (services, form, Authorization header, DPoP header: RFC 9449 §4.1)
GrantHandler = Callable[[Services, Sequence[tuple[str, str]], str | None, str | None], Response]
GRANTS: dict[str, GrantHandler] = {GRANT_TOKEN_EXCHANGE: token_exchange.exchange}
GRANT_TYPE = frozenset({"grant_type"})


def handle_token_request(
    services: Services,
    *,
    content_type: str,
    form: Sequence[tuple[str, str]],
    authorization: str | None,
    dpop: str | None = None,
) -> Response:
    require_form_encoded(content_type)  # RFC 6749 §3.2
    refuse_nul(form)
    # RFC 6749 §3.2: once, and a blank value is an omitted one (single_values).
    grant_type = single_values(form, GRANT_TYPE).get("grant_type")
    if grant_type is None:
        raise errors.InvalidRequest("Missing grant_type.", reason="request.grant_type_missing")
    handler = GRANTS.get(grant_type)
    if handler is None:
        raise errors.UnsupportedGrantType(reason="request.unsupported_grant_type")
    return handler(services, form, authorization, dpop)
