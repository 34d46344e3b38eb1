"""RFC 8414 authorization server metadata."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sts.endpoints import Response
from sts.protocol import GRANT_TOKEN_EXCHANGE, SUPPORTED_SUBJECT_TOKEN_TYPES
from sts.settings import SIGNING_ALGORITHMS, Settings
from sts.tokens.dpop import PROOF_ALGORITHMS

TOKEN_PATH = "/token"
REVOCATION_PATH = "/revoke"
INTROSPECTION_PATH = "/introspect"
STATUS_LIST_PATH = "/statuslists"
# Not registered by RFC 8414: where leaked sts tokens and credentials can be reported.
EXPOSURE_PATH = "/exposure-reports"
JWKS_PATH = "/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CLIENT_ASSERTION_ALGS = ["ES256", "RS256", "PS256", "EdDSA"]
AUTHENTICATED_METHODS = [m for m in CLIENT_AUTH_METHODS if m != "none"]


def build_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        # RFC 8414 §2
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
        # REQUIRED by §2, but sts has no authorization endpoint, so it supports no
        # response type at all; an empty array says exactly that.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        # §2: required when private_key_jwt is listed; "none" MUST NOT appear.
        "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        # Not registered by RFC 8414; names the token types the exchange accepts.
        "token_exchange_subject_token_types_supported": list(SUPPORTED_SUBJECT_TOKEN_TYPES),
        "access_token_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        # RFC 8414 §2 (RFC 7009, RFC 7662): both require client authentication.
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "revocation_endpoint_auth_methods_supported": AUTHENTICATED_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "introspection_endpoint_auth_methods_supported": AUTHENTICATED_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        # draft-ietf-oauth-status-list: where every status list this issuer serves is named.
        "status_list_aggregation_endpoint": issuer + STATUS_LIST_PATH,
        "exposure_report_endpoint": issuer + EXPOSURE_PATH,
        # RFC 9449 §5.1: the algorithms a DPoP proof may be signed with.
        "dpop_signing_alg_values_supported": sorted(PROOF_ALGORITHMS),
    }


def metadata_path_for(issuer: str) -> str:
    """Where RFC 8414 §3 puts the metadata of ``issuer``: the well-known string goes
    between the host and the issuer's path (https://h/t -> /.well-known/...-server/t).
    An issuer with a path is also answered at the path appended, where the app is mounted
    under that path."""
    return METADATA_PATH + urlsplit(issuer).path.rstrip("/")


def render_metadata(settings: Settings) -> Response:
    return Response(200, build_metadata(settings), {"Cache-Control": "public, max-age=3600"})
