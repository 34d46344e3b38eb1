"""Verification of inbound JWTs (subject and actor tokens). Every option is explicit.

What a token IS is decided by its verified issuer and signature, never by the declared
token type: the unverified ``iss`` only selects which key set to try, and the signature
must then verify with that issuer's registered keys and algorithms.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.util import to_bytes

from sts.clock import from_numeric_date
from sts.errors import InvalidRequest
from sts.tokens.claims import act_depth
from sts.tokens.issuer_keys import IssuerKeyCache
from sts.tokens.jose import MALFORMED_JWS, accepting_eddsa
from sts.trust import IssuerConfig, TrustConfig

# Asymmetric algorithms only: "none" and HMAC (where a public key could be abused as the
# shared secret) are never accepted, whatever an issuer's configuration says.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
MAX_TOKEN_BYTES = 16 * 1024
# What the lineage and audit rows hold of a token (issued_tokens/audit_log: ``subject``
# VARCHAR(1024), ``subject_token_id`` VARCHAR(255)). RFC 7519 bounds neither claim; a
# longer one would fail the insert on PostgreSQL (a 503, and a refusal that could not be
# recorded), so it is refused up front, recorded, as any unacceptable token is.
MAX_SUBJECT_CHARS = 1024
MAX_JTI_CHARS = 255
# RFC 8693 §4.1 nests earlier actors in ``act``; nothing bounds the chain but the
# token's size, and one nested past ~900 levels made signing the new token fail after
# its records were committed (json's recursion limit). A real delegation chain is a few.
MAX_ACT_DEPTH = 32
ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 §2.1


@dataclass(frozen=True)
class VerifiedJwt:
    kind: Literal["issuer", "sts"]
    issuer: IssuerConfig | None  # None for tokens of this STS
    header: dict[str, Any]
    claims: dict[str, Any]
    token_id: str  # jti, or sha256:<hex> when the token has none
    expires_at: datetime


class OwnKeySet:
    """sts's published keys as a joserfc KeySet, rebuilt only when the JWKS changes."""

    def __init__(self) -> None:
        self._source: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    def get(self, jwks: dict[str, Any]) -> KeySet:
        if jwks is not self._source or self._keys is None:
            with self._lock:
                self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
                self._source = jwks
        return self._keys


def token_fingerprint(token: str) -> str:
    """How the audit log and the lineage name a token without a jti: never the token
    itself. For a compact JWS, the hash of its signing input (header and payload) only:
    an ECDSA signature (r, s) has a twin (r, n - s) that verifies as well, so a hash of
    the whole token would give a leaked token, blocked by its fingerprint, a second
    fingerprint that is not blocked. The signing input cannot change without the
    signature failing."""
    header, dot, rest = token.partition(".")
    payload, dot2, _signature = rest.partition(".")
    named = f"{header}.{payload}" if dot and dot2 else token
    return "sha256:" + hashlib.sha256(named.encode()).hexdigest()


def refuse(role: str, what: str, reason: str, detail: str | None = None) -> InvalidRequest:
    # RFC 8693 §2.2.2: an invalid or unacceptable subject/actor token is invalid_request.
    return InvalidRequest(f"The {role} token {what}.", reason=f"{role}.{reason}", detail=detail)


def verify_jwt(
    token: str,
    *,
    role: str,
    trust: TrustConfig,
    own_issuer: str,
    own_keys: KeySet,
    issuer_keys: IssuerKeyCache,
    leeway: int,
    now: datetime,
) -> VerifiedJwt:
    if len(token) > MAX_TOKEN_BYTES:
        raise refuse(role, "is too large", "too_large")
    try:
        compact = jws.extract_compact(to_bytes(token))
        header = compact.headers()
        # Unverified: read only to choose the issuer's key set below.
        payload = json.loads(compact.payload)
    except MALFORMED_JWS:
        raise refuse(role, "is not a well-formed JWT", "malformed") from None
    if not isinstance(payload, dict) or not isinstance(header, dict):
        raise refuse(role, "is not a well-formed JWT", "malformed")

    # RFC 7515 §4.1.11: a "crit" extension we do not understand makes the JWS invalid.
    # sts understands none, so any "crit" is refused.
    if "crit" in header:
        raise refuse(role, "uses an unsupported critical header", "crit")
    # "jku", "x5u", "jwk", "x5c" are ignored on purpose: keys come only from the issuer's
    # registration (RFC 8725 §3.10), never from the token.

    claimed_issuer = payload.get("iss")
    if not isinstance(claimed_issuer, str):
        raise refuse(role, "has no issuer", "no_issuer")
    issuer: IssuerConfig | None = None
    if claimed_issuer == own_issuer:
        kind: Literal["issuer", "sts"] = "sts"
        algorithms = {k.get("alg") for k in (key.dict_value for key in own_keys.keys)}
        if header.get("typ") != ACCESS_TOKEN_TYP:
            raise refuse(role, "is not an access token of this service", "typ")
    else:
        issuer = trust.issuers_by_url.get(claimed_issuer)
        if issuer is None:
            raise refuse(role, "is from an untrusted issuer", "untrusted_issuer")
        kind = "issuer"
        algorithms = set(issuer.algorithms)

    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS or alg not in algorithms:
        # repr: the header is unverified, and its alg goes to the audit row's detail.
        what = "is signed with an algorithm that is not accepted"
        raise refuse(role, what, "alg", f"alg={alg!r}")
    # The issuer's keys only now, after the checks that need none: a token that fails
    # them never costs a fetch of its issuer's JWKS (which an unknown kid may trigger).
    key_set = own_keys if issuer is None else issuer_keys.key_set(issuer, header.get("kid"))
    key = _select_key(key_set, header.get("kid"), alg)
    if key is None:
        raise refuse(role, "is signed with an unknown key", "unknown_kid")
    try:
        with accepting_eddsa(alg):
            # The signature of the token extracted above (what jwt.decode would do, without
            # parsing the token a second time); ``claims`` is its payload, parsed above.
            valid = jws.validate_compact(compact, key, registry=_registry_for(alg))
    except JoseError:
        valid = False
    if not valid:
        raise refuse(role, "signature is invalid", "signature")

    claims = payload
    registry = _claims_registry(kind, issuer, own_issuer, leeway, now)
    try:
        registry.validate(claims)
    except JoseError as exc:
        what, reason = _describe_claim_error(exc)
        raise refuse(role, what, reason, str(exc)) from None
    refuse_unstorable(claims, role)
    expires_at = from_numeric_date(claims["exp"])
    if expires_at is None:
        raise refuse(role, "has an invalid claim", "invalid_claim", "exp out of range")
    token_id = claims.get("jti") if isinstance(claims.get("jti"), str) else None
    return VerifiedJwt(
        kind=kind,
        issuer=issuer,
        header=dict(header),
        claims=claims,
        token_id=token_id or token_fingerprint(token),
        expires_at=expires_at,
    )


_REGISTRIES: dict[str, jws.JWSRegistry] = {}


def unstorable_text(value: str) -> bool:
    """A string a database row cannot hold: a NUL (PostgreSQL's text types refuse it) or a
    lone surrogate (JSON's "\\ud800" reads as one; it has no UTF-8 form). Stored as is,
    either fails the insert: a 503, and a refusal that cannot be recorded."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def refuse_unstorable(claims: dict[str, Any], role: str) -> None:
    """A ``sub`` or ``jti`` longer than the audit and lineage rows hold, or one they
    cannot hold at all (:func:`unstorable_text`), is refused (the registry has checked
    that both are strings, RFC 7519 §4.1.2 and §4.1.7)."""
    if len(claims["sub"]) > MAX_SUBJECT_CHARS:
        raise refuse(role, f"has a sub longer than {MAX_SUBJECT_CHARS} characters", "sub_too_long")
    jti = claims.get("jti")
    if jti is not None and len(jti) > MAX_JTI_CHARS:
        raise refuse(role, f"has a jti longer than {MAX_JTI_CHARS} characters", "jti_too_long")
    for name in ("sub", "jti"):
        if isinstance(claims.get(name), str) and unstorable_text(claims[name]):
            raise refuse(role, f"has a {name} with a NUL or an invalid character", "characters")
    # RFC 8693 §4.1: ``act`` is a JSON object whose ``sub`` names the actor; the token
    # carries it on, and the lineage records it (``actor``, VARCHAR(1024)).
    act = claims.get("act")
    if act_depth(act) > MAX_ACT_DEPTH:
        raise refuse(role, f"nests more than {MAX_ACT_DEPTH} actors in act", "act_depth")
    if isinstance(act, dict) and "sub" in act:
        actor = act["sub"]
        if not isinstance(actor, str) or len(actor) > MAX_SUBJECT_CHARS or unstorable_text(actor):
            raise refuse(
                role,
                f"has an act.sub that is not a string of at most {MAX_SUBJECT_CHARS} characters",
                "act_sub",
            )


def _registry_for(alg: str) -> jws.JWSRegistry:
    """joserfc's algorithm registry admitting only ``alg``, built once per algorithm."""
    registry = _REGISTRIES.get(alg)
    if registry is None:
        registry = _REGISTRIES[alg] = jws.JWSRegistry(algorithms=[alg])
    return registry


def _select_key(key_set: KeySet, kid: object, alg: str) -> Any:
    candidates = [k for k in key_set.keys if kid is None or k.kid == kid]
    if kid is None and len(candidates) != 1:
        return None  # without a kid, only an unambiguous single key is acceptable
    for key in candidates:
        published_alg = key.get("alg")
        if published_alg is None or published_alg == alg:
            return key
    return None


def _claims_registry(
    kind: str, issuer: IssuerConfig | None, own_issuer: str, leeway: int, now: datetime
) -> jwt.JWTClaimsRegistry:
    timestamp = int(now.timestamp())
    if kind == "sts":
        return jwt.JWTClaimsRegistry(
            now=timestamp,
            leeway=leeway,
            iss={"essential": True, "value": own_issuer},
            sub={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
        )
    assert issuer is not None
    # The audience must name this STS (one of the issuer's registered audiences): a token
    # minted for some other service must not be usable here (no confused deputy).
    return jwt.JWTClaimsRegistry(
        now=timestamp,
        leeway=leeway,
        iss={"essential": True, "value": issuer.issuer},
        sub={"essential": True},
        aud={"essential": True, "values": list(issuer.audiences)},
        exp={"essential": True},
    )


def _describe_claim_error(exc: JoseError) -> tuple[str, str]:
    error = getattr(exc, "error", "")
    claim = getattr(exc, "claim", "") or ""
    if error == "expired_token":
        return "has expired", "expired"
    text = str(exc)
    if "not yet valid" in text:
        return "is not yet valid", "not_yet_valid"
    if "future" in text:
        return "was issued in the future", "issued_in_future"
    if error == "missing_claim":
        return "is missing a required claim", "missing_claim"
    if claim == "aud" or "'aud'" in text:
        return "is not intended for this service", "audience"
    if claim == "iss" or "'iss'" in text:
        return "has the wrong issuer", "issuer"
    return "has an invalid claim", "invalid_claim"
