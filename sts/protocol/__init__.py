"""Wire-format constants: grant types and token-type URNs (RFC 8693 §3), and the one media
type every sts endpoint that takes parameters accepts."""

from __future__ import annotations

from collections.abc import Sequence

from sts.errors import InvalidRequest

# RFC 6749 §3.2, RFC 7009 §2.1, RFC 7662 §2.1: parameters are sent form-encoded in a POST.
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def require_form_encoded(content_type: str) -> None:
    if content_type != FORM_MEDIA_TYPE:
        raise InvalidRequest(
            f"The request body must be {FORM_MEDIA_TYPE}.", reason="request.content_type"
        )


def refuse_nul(form: Sequence[tuple[str, str]]) -> None:
    """RFC 6749 Appendix A: no parameter's syntax admits %x00, and a NUL is what a
    PostgreSQL text column cannot hold: the audit row of the refusal would fail too."""
    for name, value in form:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("A parameter holds a NUL character.", reason="request.nul")


GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"

TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
TOKEN_TYPE_REFRESH_TOKEN = "urn:ietf:params:oauth:token-type:refresh_token"
# Our own URN for opaque service credentials (API keys); advertised in metadata.
TOKEN_TYPE_API_KEY = "urn:sts:params:oauth:token-type:api-key"

SUPPORTED_SUBJECT_TOKEN_TYPES = (
    TOKEN_TYPE_JWT,
    TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_API_KEY,
)
