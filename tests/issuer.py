"""A local test issuer: its own keys, a JWKS served over real HTTP on 127.0.0.1, and a
minting helper. A fake issuer, not a mock: sts fetches and verifies exactly as in
production."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey


def sign_es256_raw(key: ECKey, header: dict[str, Any], claims: dict[str, Any] | str) -> str:
    """An ES256 compact JWS of exactly this header and these claims, serialised by
    ``json.dumps`` (ASCII, so a lone surrogate travels as its escape), or of the payload
    text ``claims`` as is: whatever a JOSE library would refuse to produce."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = b64(json.dumps(header).encode()) + "." + b64(payload.encode())
    der = key.raw_value.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class TestIssuer:
    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str = "https://ci.issuer.test", alg: str = "ES256") -> None:
        self.issuer = issuer
        self.alg = alg
        key = ECKey.generate_key("P-256") if alg == "ES256" else RSAKey.generate_key(2048)
        self.key = key
        self.kid = key.thumbprint()
        self.fetches = 0
        self.jwks_url: str | None = None
        # Keys the JWKS publishes besides the signing key (another issuer's, or ones sts
        # cannot use).
        self.extra_jwks: list[dict[str, Any]] = []
        # Raw bytes the JWKS endpoint answers with instead of the JWKS (a whole HTTP
        # response, or not one): an endpoint that is down, broken or hostile.
        self.response: bytes | None = None

    def public_jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        public.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return {"keys": [public, *self.extra_jwks]}

    def rotate(self) -> None:
        """A new key with a new kid (the issuer rotated)."""
        self.key = ECKey.generate_key("P-256") if self.alg == "ES256" else RSAKey.generate_key(2048)
        self.kid = self.key.thumbprint()

    def mint(
        self,
        *,
        sub: str = "repo:acme/payments:environment:production",
        aud: str | list[str] = "https://sts.test",
        lifetime: int = 600,
        now: int | None = None,
        header: dict[str, Any] | None = None,
        raw: bool = False,
        **claims: Any,
    ) -> str:
        """A signed token (``raw``: through :meth:`mint_raw`, whose JSON escapes what
        joserfc's cannot encode, e.g. a lone surrogate)."""
        issued = int(time.time()) if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": uuid.uuid4().hex,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        head = {"alg": self.alg, "kid": self.kid, "typ": "JWT", **(header or {})}
        if raw:
            return self.mint_raw(head, payload)
        return jwt.encode(head, payload, self.key, algorithms=[self.alg])

    def mint_raw(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """Sign any header, even one a JOSE library would refuse to produce (ES256 only)."""
        return sign_es256_raw(self.key, header, claims)

    @contextmanager
    def serve(self) -> Iterator[str]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                if issuer.response is not None:
                    self.wfile.write(issuer.response)
                    return
                body = json.dumps(issuer.public_jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        with serving(Handler) as base:
            self.jwks_url = f"{base}/jwks"
            yield self.jwks_url


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering with ``handler``: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for the loop to notice (default 0.5 s).
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def keyset_of(issuer: TestIssuer) -> KeySet:
    return KeySet.import_key_set(issuer.public_jwks())  # type: ignore[arg-type]
