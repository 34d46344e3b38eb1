"""The floor: the least an exchange can cost in this stack, with no database.

A tiny Flask app that does only what no token exchange can skip: check the client's HTTP
Basic secret (a SHA-256 compare), verify the subject JWT (ES256, iss, aud, exp, nbf, sub)
and sign a new ES256 access token. No rules, no lineage, no audit, no database. Served
by exactly the same server code as sts (``sts.cli.serve.run_server``)::

    BENCH_FLOOR_JWKS=/path/to/upstream_public.jwks.json \\
        python -m bench.floor --bind 127.0.0.1:8090 --workers 2 --server gunicorn
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from bench.world import PEER_AUDIENCE, PEER_CLIENT, PEER_ISSUER

ISSUER = "https://floor.bench.test"


def create_floor_app(jwks: dict[str, Any]) -> Flask:
    upstream = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    signing_key = ECKey.generate_key("P-256")
    kid = signing_key.thumbprint()
    expected = hashlib.sha256(PEER_CLIENT[1].encode()).digest()
    app = Flask("floor")

    def error(status: int, code: str) -> Response:
        return Response(json.dumps({"error": code}), status, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', 200, mimetype="application/json")

    @app.post("/token")
    def token() -> Response:
        header = request.headers.get("Authorization", "")
        try:
            client_id, _, secret = (
                base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
            )
        except ValueError:
            return error(401, "invalid_client")
        digest = hashlib.sha256(secret.encode()).digest()
        if client_id != PEER_CLIENT[0] or not hmac.compare_digest(digest, expected):
            return error(401, "invalid_client")
        form = request.form
        now = int(time.time())
        try:
            decoded = jwt.decode(form["subject_token"], upstream, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                now=now,
                leeway=30,
                iss={"essential": True, "value": PEER_ISSUER},
                aud={"essential": True, "value": PEER_AUDIENCE},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, KeyError, ValueError):
            return error(400, "invalid_request")
        claims = {
            "iss": ISSUER,
            "sub": decoded.claims["sub"],
            "aud": form.get("audience", ""),
            "client_id": client_id,
            "scope": form.get("scope", ""),
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(18),
        }
        access_token = jwt.encode(
            {"alg": "ES256", "kid": kid, "typ": "at+jwt"}, claims, signing_key, algorithms=["ES256"]
        )
        body = {
            "access_token": access_token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": claims["scope"],
        }
        response = Response(json.dumps(body, separators=(",", ":")), 200)
        response.mimetype = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def main() -> None:
    from bench.servers import serve_in_this_process

    def build() -> Flask:
        return create_floor_app(json.loads(Path(os.environ["BENCH_FLOOR_JWKS"]).read_text()))

    serve_in_this_process(__doc__.splitlines()[0], "127.0.0.1:8090", build)


if __name__ == "__main__":
    main()
