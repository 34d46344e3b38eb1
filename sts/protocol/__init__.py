"""Wire-format constants: grant types and token-type URNs (RFC 8693 §3)."""

from __future__ import annotations

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
