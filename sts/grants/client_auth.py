"""Client authentication at the token endpoint.

Methods: ``client_secret_basic`` and ``client_secret_post`` (RFC 6749 §2.3.1),
``private_key_jwt`` (RFC 7523 §2.2, §3), and none (where a rule allows it). A client
must use the one method it is registered for, and only one per request (RFC 6749 §2.3).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.util import to_bytes

from sts.clock import from_numeric_date
from sts.credentials import secret_matches
from sts.errors import InvalidClient, InvalidRequest
from sts.protocol.exchange import ClientCredentials
from sts.tokens.dpop import PROOF_TYP
from sts.tokens.jose import MALFORMED_JWS, accepting_eddsa
from sts.tokens.status_list import STATUS_LIST_TYP
from sts.tokens.verify import (
    ACCESS_TOKEN_TYP,
    ASYMMETRIC_ALGORITHMS,
    MAX_JTI_CHARS,
    unstorable_text,
)
from sts.trust import ClientConfig

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600  # seconds: a longer-lived assertion is refused as unsafe
# RFC 8725 §3.11: the typ of every other kind of JWT sts reads or signs (its access tokens,
# DPoP proofs, status list tokens). One of those is never a client assertion, even when
# its claims and key would verify as one (explicit typing against substitution).
OTHER_JWT_TYPES = frozenset({ACCESS_TOKEN_TYP, PROOF_TYP, STATUS_LIST_TYP})


@dataclass(frozen=True)
class AuthenticatedClient:
    client_id: str | None  # None: no client authentication (anonymous exchange)
    method: str
    assertion_jti: str | None = None  # to record, so a replay fails (RFC 7523 §3 item 7)
    assertion_expires_at: datetime | None = None


ANONYMOUS = AuthenticatedClient(client_id=None, method="none")


def parse_basic_authorization(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1 / RFC 7617: base64(urlencode(id) ":" urlencode(secret))."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise InvalidClient("Unsupported Authorization scheme.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII input
        raise InvalidClient("Malformed Basic credentials.") from None
    client_id, separator, secret = decoded.partition(":")
    if not separator or not client_id:
        raise InvalidClient("Malformed Basic credentials.")
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_client(
    credentials: ClientCredentials,
    authorization: str | None,
    clients: Mapping[str, ClientConfig],
    *,
    token_endpoint: str,
    issuer: str,
    leeway: int,
    now: datetime,
) -> AuthenticatedClient:
    registry = clients
    methods = []
    if authorization:
        methods.append("client_secret_basic")
    if credentials.client_secret is not None:
        methods.append("client_secret_post")
    if credentials.client_assertion is not None or credentials.client_assertion_type is not None:
        methods.append("private_key_jwt")
    if len(methods) > 1:
        # RFC 6749 §2.3: the client MUST NOT use more than one authentication method.
        raise InvalidRequest(
            "Use exactly one client authentication method.", reason="client.several_methods"
        )
    if not methods:
        if credentials.client_id is None:
            return ANONYMOUS
        client = _known_client(registry, credentials.client_id, "none")
        return AuthenticatedClient(client_id=None, method="none") if client else ANONYMOUS
    method = methods[0]
    if method == "client_secret_basic":
        assert authorization is not None
        client_id, secret = parse_basic_authorization(authorization)
        if credentials.client_id is not None and credentials.client_id != client_id:
            raise InvalidRequest("client_id does not match the credentials.", reason="client.id")
        return _check_secret(registry, client_id, secret, method)
    if method == "client_secret_post":
        if credentials.client_id is None:
            raise InvalidClient("client_id is required with client_secret.")
        assert credentials.client_secret is not None
        return _check_secret(registry, credentials.client_id, credentials.client_secret, method)
    return _check_assertion(
        registry, credentials, token_endpoint=token_endpoint, issuer=issuer, leeway=leeway, now=now
    )


def _known_client(
    registry: Mapping[str, ClientConfig], client_id: str, method: str
) -> ClientConfig:
    client = registry.get(client_id)
    if client is None or client.disabled or client.auth_method != method:
        # One answer for unknown, disabled and wrong-method clients: no client oracle.
        raise InvalidClient(
            reason="client.unknown" if client is None else "client.rejected",
            detail=f"client {client_id!r} via {method}",
        )
    return client


def _check_secret(
    registry: Mapping[str, ClientConfig], client_id: str, secret: str, method: str
) -> AuthenticatedClient:
    client = _known_client(registry, client_id, method)
    if client.secret_hash is None or not secret_matches(secret, client.secret_hash):
        raise InvalidClient(reason="client.bad_secret", detail=client_id)
    return AuthenticatedClient(client_id=client_id, method=method)


def _check_assertion(
    registry: Mapping[str, ClientConfig],
    credentials: ClientCredentials,
    *,
    token_endpoint: str,
    issuer: str,
    leeway: int,
    now: datetime,
) -> AuthenticatedClient:
    """RFC 7523 §3: iss = sub = client_id, aud names this server, exp required, jti once."""
    if (
        credentials.client_assertion_type != JWT_BEARER_ASSERTION
        or not credentials.client_assertion
    ):
        raise InvalidClient("Unsupported client assertion.")
    assertion = credentials.client_assertion
    # The unverified sub only selects the client whose keys must then verify it.
    client_id = credentials.client_id or _unverified_subject(assertion)
    if client_id is None:
        raise InvalidClient("The client assertion is malformed.")
    # Until the signature is verified, every refusal reads the same, whether or not the
    # client exists (as _known_client's): the header is checked before the client is
    # looked up, and a signature that does not verify gets the generic description (the
    # audit keeps the reason). Otherwise anyone could tell registered client ids apart.
    check_assertion_header(assertion)
    client = _known_client(registry, client_id, "private_key_jwt")
    if client.jwks is None:
        # Fail closed: a registered jwks that does not import leaves the client no keys.
        raise InvalidClient(
            reason="client.keys_invalid" if client.keys_invalid else "client.no_keys"
        )
    algorithms = sorted(ASYMMETRIC_ALGORITHMS)
    try:
        with accepting_eddsa(algorithms):
            token = jwt.decode(assertion, client.jwks, algorithms=algorithms)
    except MALFORMED_JWS:
        raise InvalidClient(reason="client.assertion") from None
    registry_ = jwt.JWTClaimsRegistry(
        now=int(now.timestamp()),
        leeway=leeway,
        iss={"essential": True, "value": client_id},
        sub={"essential": True, "value": client_id},
        aud={"essential": True, "values": [token_endpoint, issuer]},
        exp={"essential": True},
        jti={"essential": True},
    )
    try:
        registry_.validate(token.claims)
    except JoseError as exc:
        raise InvalidClient(
            "The client assertion is not acceptable.",
            reason="client.assertion_claims",
            detail=str(exc),
        ) from None
    jti = token.claims["jti"]
    if len(jti) > MAX_JTI_CHARS or unstorable_text(jti):  # client_assertions.jti: 255
        raise InvalidClient(
            f"The client assertion's jti is longer than {MAX_JTI_CHARS} characters or "
            "holds a NUL or an invalid character.",
            reason="client.assertion_jti",
        )
    expires_at = from_numeric_date(token.claims["exp"])
    if expires_at is None or (expires_at - now).total_seconds() > MAX_ASSERTION_LIFETIME:
        raise InvalidClient("The client assertion lives too long.", reason="client.assertion_exp")
    return AuthenticatedClient(
        client_id=client_id,
        method="private_key_jwt",
        assertion_jti=str(token.claims["jti"]),
        assertion_expires_at=expires_at,
    )


def check_assertion_header(assertion: str) -> None:
    """Refuse, before joserfc reads it, a header sts does not accept in a client assertion.

    RFC 7515 §4.1.11: a recipient that does not understand an extension listed in
    ``crit`` MUST reject the JWS. sts understands none (as for every JWT it verifies), so
    any ``crit`` is refused, whatever its value; joserfc would otherwise raise TypeError
    on one that is not a list of strings (a 500) and accept one naming a standard header,
    which §4.1.11 forbids. RFC 8725 §3.11: a ``typ`` of another kind of JWT sts knows is
    refused; no ``typ``, "JWT" or any other media type is accepted (RFC 7523 sets none).
    """
    header = _unverified_header(assertion)
    if header is None:
        raise InvalidClient("The client assertion is malformed.", reason="client.assertion")
    if "crit" in header:
        raise InvalidClient(
            "The client assertion uses an unsupported critical header.",
            reason="client.assertion_crit",
        )
    typ = header.get("typ")
    if typ is None:
        return
    if not isinstance(typ, str) or _media_type(typ) in OTHER_JWT_TYPES:
        raise InvalidClient(
            "The client assertion's typ is not that of a client assertion.",
            reason="client.assertion_typ",
            detail=f"typ={typ!r}",
        )


def _media_type(typ: str) -> str:
    """RFC 7515 §4.1.9: typ is compared case-insensitively, and "application/" may be
    left out (so "application/AT+JWT" is "at+jwt")."""
    lowered = typ.lower()
    return lowered.removeprefix("application/")


def _unverified_header(assertion: str) -> dict[str, object] | None:
    try:
        header = jws.extract_compact(to_bytes(assertion)).headers()
    except MALFORMED_JWS:
        return None
    return header if isinstance(header, dict) else None


def _unverified_subject(assertion: str) -> str | None:
    try:
        payload = json.loads(jws.extract_compact(to_bytes(assertion)).payload)
    except MALFORMED_JWS:
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) else None
