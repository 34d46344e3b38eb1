"""The token endpoint (RFC 6749 §3.2), as a short pipeline:

1. check the request shape (form-encoded POST) and parse the form once;
2. dispatch on ``grant_type``: each grant module does its own part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sts import errors
from sts.endpoints import Response
from sts.grants import token_exchange
from sts.protocol import GRANT_TOKEN_EXCHANGE, require_form_encoded
from sts.services import Services

GrantHandler = Callable[[Services, Sequence[tuple[str, str]], str | None], Response]
GRANTS: dict[str, GrantHandler] = {GRANT_TOKEN_EXCHANGE: token_exchange.exchange}


def handle_token_request(
    services: Services,
    *,
    content_type: str,
    form: Sequence[tuple[str, str]],
    authorization: str | None,
) -> Response:
    require_form_encoded(content_type)  # RFC 6749 §3.2
    # RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
    grant_types = [value for name, value in form if name == "grant_type" and value]
    if not grant_types:
        raise errors.InvalidRequest("Missing grant_type.", reason="request.grant_type_missing")
    if len(grant_types) > 1:
        # RFC 6749 §3.2: request parameters MUST NOT be included more than once.
        raise errors.InvalidRequest(
            "Parameter grant_type is repeated.", reason="request.duplicate_parameter"
        )
    handler = GRANTS.get(grant_types[0])
    if handler is None:
        raise errors.UnsupportedGrantType(reason="request.unsupported_grant_type")
    return handler(services, form, authorization)
