"""Requests that name one token: RFC 7009 §2.1 revocation and RFC 7662 §2.1
introspection (``token``, optional ``token_type_hint``, client authentication)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sts.errors import InvalidRequest
from sts.protocol import refuse_nul, require_form_encoded
from sts.protocol.exchange import CLIENT_PARAMETERS, ClientCredentials, single_values

# RFC 7009 §2.1 / §4.1.2 registered hints, plus sts's own for service credentials.
TOKEN_TYPE_HINTS = ("access_token", "refresh_token", "service_credential")
TOKEN_REQUEST_PARAMETERS = CLIENT_PARAMETERS | {"token", "token_type_hint"}


@dataclass(frozen=True)
class TokenRequest:
    token: str
    token_type_hint: str | None
    client: ClientCredentials


def parse_token_request(content_type: str, form: Sequence[tuple[str, str]]) -> TokenRequest:
    require_form_encoded(content_type)
    refuse_nul(form)
    params = single_values(form, TOKEN_REQUEST_PARAMETERS)
    token = params.get("token")
    # RFC 7009 §2.1 / RFC 7662 §2.1: "token" is REQUIRED.
    if not token:
        raise InvalidRequest("Missing token.", reason="request.token_missing")
    return TokenRequest(
        token=token,
        token_type_hint=params.get("token_type_hint") or None,
        client=ClientCredentials(
            client_id=params.get("client_id") or None,
            client_secret=params.get("client_secret") or None,
            client_assertion_type=params.get("client_assertion_type") or None,
            client_assertion=params.get("client_assertion") or None,
        ),
    )
