"""DPoP proofs at the token endpoint (RFC 9449): sender-constrained tokens.

A client that sends a ``DPoP`` header proves possession of a private key; the token sts
issues then carries ``cnf.jkt``, the key's RFC 7638 thumbprint (RFC 9449 §6.1), and is
worthless to anyone who copies it out of a log without the key. Here, I/O-free:

* :func:`verify_dpop_proof`: the checks of RFC 9449 §4.3 that need no storage. The
  proof's ``jti`` is recorded in the exchange's transaction (a replay inserts nothing and
  is refused), and kept until :attr:`DpopProof.expires_at`, after which ``iat`` refuses
  the proof anyway (§11.1);
* :func:`require_possession`: a presented token that is itself bound (``cnf``) is only
  exchanged by the holder of its key. Otherwise a leaked sender-constrained token could
  be exchanged for an unbound one, and the constraint would mean nothing.
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from base64 import urlsafe_b64decode
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry, RSAKey
from joserfc.util import to_bytes

from sts.errors import InvalidDpopProof, InvalidRequest, UseDpopNonce
from sts.tokens.dpop_nonce import DpopNonces
from sts.tokens.jose import MALFORMED_JWS, accepting_eddsa
from sts.tokens.verify import ASYMMETRIC_ALGORITHMS, MAX_JTI_CHARS, unstorable_text

# RFC 9449 §4.2: "dpop+jwt", asymmetric algorithms only (never "none" nor a MAC).
PROOF_TYP = "dpop+jwt"
PROOF_ALGORITHMS = ASYMMETRIC_ALGORITHMS
MAX_PROOF_BYTES = 8 * 1024  # an RSA-4096 public key and the claims fit several times
MIN_RSA_BITS = 2048
# Verifying costs in proportion to the exponent's size: a 2,048-bit one made a proof
# ~18x slower to check (a review's measurement). Every RSA key in use has e = 65537.
MAX_RSA_EXPONENT = 2**32 - 1
# RFC 7517 §6.2.2, §6.3.2, RFC 8037 §2: members that only a private key has ("k": a
# symmetric key, which a proof can never carry).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
DEFAULT_PORTS = {"http": 80, "https": 443}
UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")


class _ProofRegistry(jws.JWSRegistry):
    """joserfc's JWS limits, with room for the key in the header: an RSA-2048 ``jwk``
    alone takes joserfc's default 512 characters of header."""

    max_header_length = MAX_PROOF_BYTES


_EXTRACTING = _ProofRegistry(algorithms=sorted(PROOF_ALGORITHMS))
_VERIFYING = {alg: _ProofRegistry(algorithms=[alg]) for alg in PROOF_ALGORITHMS}


@dataclass(frozen=True)
class DpopProof:
    """A proof that passed every check but the replay check."""

    jkt: str  # RFC 7638 SHA-256 thumbprint of the proof's key, base64url
    jti: str
    expires_at: datetime  # after this, ``iat`` refuses the proof: its jti can be forgotten


def verify_dpop_proof(
    header: str | None,
    *,
    method: str,
    uri: str,
    now: datetime,
    max_age: int,
    leeway: int,
    nonces: DpopNonces | None = None,
) -> DpopProof | None:
    """The proof in the ``DPoP`` header, checked against this request (RFC 9449 §4.3);
    None when the request has none. Raises :class:`InvalidDpopProof`, or, with ``nonces``
    (§8), :class:`UseDpopNonce` for an otherwise valid proof without a current nonce."""
    if header is None:
        return None
    proof = header.strip()
    # §4.3 check 1: one DPoP header. A server joins repeated headers with commas, which
    # a compact JWS (base64url and dots) never contains.
    if "," in proof:
        raise _invalid("Exactly one DPoP header is allowed.", "multiple")
    if not proof or len(proof) > MAX_PROOF_BYTES:
        raise _invalid("The DPoP proof is not a well-formed JWT.", "malformed")
    try:  # §4.3 check 2
        compact = jws.extract_compact(to_bytes(proof), None, _EXTRACTING)
        jose_header = compact.headers()
        claims = json.loads(compact.payload)
    except MALFORMED_JWS:
        raise _invalid("The DPoP proof is not a well-formed JWT.", "malformed") from None
    if not isinstance(jose_header, dict) or not isinstance(claims, dict):
        raise _invalid("The DPoP proof is not a well-formed JWT.", "malformed")
    alg, key, jkt = _proof_key(proof.partition(".")[0])
    try:  # §4.3 check 6, with the key from the proof itself (and only that key)
        with accepting_eddsa(alg):
            valid = jws.validate_compact(compact, key, registry=_VERIFYING[alg])
    except JoseError:
        valid = False
    if not valid:
        raise _invalid("The DPoP proof's signature is invalid.", "signature")
    jti = _check_claims(claims, method=method, uri=uri, now=now, max_age=max_age, leeway=leeway)
    if nonces is not None:  # §4.3 check 10; last, so a bad proof is told what is wrong
        _require_nonce(claims, nonces, now, jkt)
    return DpopProof(
        jkt=jkt,
        jti=jti,
        expires_at=now + timedelta(seconds=max_age + 2 * leeway),
    )


def require_possession(role: str, claims: Mapping[str, Any], proof: DpopProof | None) -> None:
    """A token bound to a key (``cnf``, RFC 7800) is exchanged only with a DPoP proof by
    that key (RFC 9449 §6.1: ``jkt``); a binding sts cannot check (an mTLS certificate's
    ``x5t#S256``, RFC 8705) refuses the token: fail closed. So does a ``cnf`` that is
    not an object (RFC 7800 §3.1), JSON ``null`` included: an issuer that wrote the
    member meant a binding, and sts cannot tell which."""
    if "cnf" not in claims:
        return
    cnf = claims["cnf"]
    jkt = dpop_key(claims)
    if jkt is None or set(cnf) != {"jkt"}:  # dpop_key: None unless cnf is an object
        raise InvalidRequest(
            f"The {role} token is bound to a key in a way this service cannot check.",
            reason=f"{role}.cnf_unsupported",
        )
    if proof is None:
        raise _invalid(
            f"The {role} token is sender-constrained: send a DPoP proof signed with its key.",
            f"{role}_bound",
        )
    if proof.jkt != jkt:
        raise _invalid(f"The DPoP proof is not signed with the {role} token's key.", f"{role}_key")


def dpop_key(claims: Mapping[str, Any]) -> str | None:
    """The thumbprint a token is bound to (``cnf.jkt``, RFC 9449 §6.1), if any."""
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, Mapping) else None
    return jkt if isinstance(jkt, str) else None


@functools.lru_cache(maxsize=8)
def _normalized_endpoint(uri: str) -> str | None:
    """This service's own endpoint URI, normalised once."""
    return normalize_uri(uri)


def normalize_uri(uri: str) -> str | None:
    """RFC 3986 §6.2.2-6.2.3 normalisation as RFC 9449 §4.3 asks for ``htu``: scheme and
    host in lower case, percent-encoding normalised, dot segments removed, the scheme's
    default port dropped, an empty path as "/"; query and fragment ignored. None: not an
    absolute http(s) URI, or one with userinfo (RFC 9110 §4.2.4: never generated)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = _remove_dot_segments(UNRESERVED.sub(_normalize_escape, parts.path)) or "/"
    return urlunsplit((scheme, host, path, "", ""))


def _normalize_escape(match: re.Match[str]) -> str:
    """RFC 3986 §6.2.2.1-2: an escaped unreserved character is that character; any other
    escape in upper case."""
    char = chr(int(match.group(1), 16))
    if char.isascii() and (char.isalnum() or char in "-._~"):
        return char
    return match.group(0).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 (§6.2.2.3), for an absolute path."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


@functools.lru_cache(maxsize=1024)
def _proof_key(header_segment: str) -> tuple[str, Any, str]:
    """The proof header's algorithm, public key and the key's RFC 7638 thumbprint, checked
    (§4.3 checks 4, 5 and 7). Cached by the header's exact bytes: a client signs its
    proofs with one key, so its headers repeat, and importing the key (point checks
    included) and hashing it cost ~45 µs of a proof's ~120 (``python -m bench.dpop``).
    A header that fails a check raises, and nothing is cached for it."""
    header = json.loads(urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4)))
    alg = _check_header(header)
    key = _public_key(header.get("jwk"), alg)
    return alg, key, key.thumbprint()


def _check_header(header: Mapping[str, Any]) -> str:
    # §4.3 checks 3-5: typ, an accepted asymmetric alg; "crit" (RFC 7515 §4.1.11) is
    # refused as for every JWS sts reads: it understands no extension.
    if header.get("typ") != PROOF_TYP:
        raise _invalid(f'The DPoP proof\'s typ must be "{PROOF_TYP}".', "typ")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in PROOF_ALGORITHMS:
        raise _invalid("The DPoP proof is signed with an algorithm that is not accepted.", "alg")
    if "crit" in header:
        raise _invalid("The DPoP proof uses an unsupported critical header.", "crit")
    return alg


def _public_key(jwk: object, alg: str) -> Any:
    """§4.3 check 7: the ``jwk`` header is a public key, of a type that ``alg`` uses."""
    if not isinstance(jwk, dict):
        raise _invalid("The DPoP proof has no jwk header.", "jwk")
    if PRIVATE_MEMBERS & jwk.keys():
        raise _invalid("The DPoP proof's jwk must be a public key.", "private_key")
    if jwk.get("alg") not in (None, alg):
        raise _invalid("The DPoP proof's jwk is for another algorithm.", "jwk")
    try:
        with warnings.catch_warnings():
            # joserfc warns of a short RSA key; refused below, with its own reason.
            warnings.simplefilter("ignore", SecurityWarning)
            key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):  # KeyError: an unknown curve
        raise _invalid("The DPoP proof's jwk is not a valid public key.", "jwk") from None
    if key.is_private or key.key_type not in _KEY_TYPES[alg]:
        raise _invalid("The DPoP proof's jwk does not fit its algorithm.", "jwk")
    if isinstance(key, RSAKey) and key.public_key.key_size < MIN_RSA_BITS:
        raise _invalid(f"The DPoP proof's RSA key is shorter than {MIN_RSA_BITS} bits.", "jwk")
    if isinstance(key, RSAKey) and key.public_key.public_numbers().e > MAX_RSA_EXPONENT:
        raise _invalid("The DPoP proof's RSA key has an oversized exponent.", "jwk")
    # One key, one thumbprint: RFC 7518 §6.2.1.2-3 (x and y at the curve's full size),
    # §6.3.1.1-2 (n and e without leading zeros), RFC 8037 §2. A key spelled another way
    # (a leading zero byte) would get another RFC 7638 thumbprint, and so slip past
    # ``sts revoke --dpop-key`` and the check that a bound token's key signed the proof.
    binding: Any = key.binding  # the key type's own (joserfc types it as the union's)
    canonical = binding.convert_raw_key_to_dict(key.public_key, False)
    if any(jwk.get(name) != value for name, value in canonical.items()):
        raise _invalid("The DPoP proof's jwk is not in its RFC 7518 encoding.", "jwk")
    return key


_KEY_TYPES = {
    **{alg: ("EC",) for alg in ("ES256", "ES384", "ES512")},
    **{alg: ("RSA",) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "EdDSA": ("OKP",),
}


def _check_claims(
    claims: Mapping[str, Any], *, method: str, uri: str, now: datetime, max_age: int, leeway: int
) -> str:
    """§4.3 checks 3, 8, 9 and 11; the jti, for the replay check."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _invalid("The DPoP proof has no jti.", "jti")
    if len(jti) > MAX_JTI_CHARS:
        raise _invalid(f"The DPoP proof's jti is longer than {MAX_JTI_CHARS} characters.", "jti")
    if unstorable_text(jti):  # dpop_proofs.jti could not hold it
        raise _invalid("The DPoP proof's jti holds a NUL or an invalid character.", "jti")
    if claims.get("htm") != method:  # RFC 9110 §9.1: a method name is case-sensitive
        raise _invalid("The DPoP proof's htm does not match the request method.", "htm")
    htu = claims.get("htu")
    expected = _normalized_endpoint(uri)
    if expected is None or not isinstance(htu, str):
        raise _invalid("The DPoP proof's htu does not match this endpoint.", "htu")
    if htu != uri and normalize_uri(htu) != expected:  # the same string: nothing to normalise
        raise _invalid("The DPoP proof's htu does not match this endpoint.", "htu")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise _invalid("The DPoP proof has no iat.", "iat")
    try:
        issued = float(iat)
    except OverflowError:  # an integer past any float
        issued = math.inf
    # NaN compares false with everything: without this, it would pass both checks below
    # at any time, also once the proof's jti has been forgotten.
    if not math.isfinite(issued):
        raise _invalid("The DPoP proof has no valid iat.", "iat")
    age = now.timestamp() - issued
    if age > max_age + leeway:
        raise _invalid("The DPoP proof is too old.", "stale")
    if age < -leeway:
        raise _invalid("The DPoP proof was issued in the future.", "future")
    return jti


def _require_nonce(claims: Mapping[str, Any], nonces: DpopNonces, now: datetime, jkt: str) -> None:
    """RFC 9449 §8: without a nonce this service handed out (recently), the caller is sent
    ``use_dpop_nonce`` and the current nonce, to retry with a new proof. The audit row
    names the key: the proof is otherwise valid."""
    if "nonce" in claims:
        nonce = claims["nonce"]
        if not isinstance(nonce, str):  # §4.2: a string (null included: the member is there)
            raise _invalid("The DPoP proof's nonce is not a string.", "nonce")
        if nonces.accepts(nonce, now):
            return
    reason = "dpop.nonce_invalid" if "nonce" in claims else "dpop.nonce_missing"
    raise UseDpopNonce(nonces.current(now), reason=reason, detail=f"dpop_jkt={jkt}")


def _invalid(description: str, reason: str) -> InvalidDpopProof:
    return InvalidDpopProof(description, reason=f"dpop.{reason}")
