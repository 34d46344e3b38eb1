"""Key generation and JWK conversion. kid is the RFC 7638 JWK thumbprint (SHA-256)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwk

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
JoseKey = jwk.ECKey | jwk.OKPKey | jwk.RSAKey

RSA_BITS = 3072  # NIST SP 800-57: 128-bit security, matching P-256 and Ed25519


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ValueError(f"unsupported signing algorithm {alg}")


def to_jose_key(private_key: PrivateKey) -> JoseKey:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return jwk.ECKey.import_key(private_key)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return jwk.OKPKey.import_key(private_key)
    return jwk.RSAKey.import_key(private_key)


def key_matches_alg(private_key: PrivateKey, alg: str) -> bool:
    if alg == "ES256":
        return isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        )
    if alg == "EdDSA":
        return isinstance(private_key, ed25519.Ed25519PrivateKey)
    return isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size >= 2048


def thumbprint(private_key: PrivateKey) -> str:
    """RFC 7638 §3: base64url SHA-256 over the required public members, in order."""
    return to_jose_key(private_key).thumbprint()


def public_jwk(private_key: PrivateKey, alg: str) -> dict[str, Any]:
    """The public JWK as published (RFC 7517 §4: kid, alg, use)."""
    key = to_jose_key(private_key)
    published: dict[str, Any] = dict(key.as_dict(private=False))
    published.update({"kid": key.thumbprint(), "alg": alg, "use": "sig"})
    return published
