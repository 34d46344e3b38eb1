"""A token exchange with a DPoP proof (RFC 9449), as a workload or an agent would make it.

The caller keeps one key pair for its lifetime (the token sts issues is bound to it), signs
a fresh proof for every request, and keeps the nonce sts hands out (``DPoP-Nonce``) for its
next proof. If sts requires nonces (``STS_DPOP_NONCE_SECRET``) and the caller has none, or
an old one, sts answers ``use_dpop_nonce`` with the nonce to use, and the request is made
again once with a new proof carrying it (§8). Needs only the standard library and joserfc::

    python examples/dpop_client.py --token-url https://sts.example/token \\
        --client-id ci-runner --client-secret-file secret.txt \\
        --subject-token-file "$ACTIONS_ID_TOKEN_FILE" --audience https://deploy.acme.internal

An agent presenting its team's API key and its own actor token, authenticating with
``client_secret_post`` (``examples/ai-agent.yaml``)::

    python examples/dpop_client.py --token-url https://sts.example/token \\
        --client-id agent-runtime --client-secret-file secret.txt --client-auth post \\
        --subject-token-file api-key.txt \\
        --subject-token-type urn:sts:params:oauth:token-type:api-key \\
        --actor-token-file agent.jwt --audience https://api.acme.internal/projects/alpha

It prints the token response (the access token is the caller's to use: keep it out of
logs), and the key's thumbprint, which ``sts revoke --dpop-key`` takes if the key leaks.
Behind a proxy, ``--public-url`` is the token endpoint as sts names it (``STS_ISSUER`` +
``/token``), which every proof's ``htu`` must match. A client that authenticates with
``private_key_jwt`` sends a new assertion with the retry: the refused request spent it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@dataclass
class DpopSession:
    """One key pair and the last nonce the server handed out."""

    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256"))
    nonce: str | None = None

    @property
    def thumbprint(self) -> str:
        """RFC 7638: what the issued token's ``cnf.jkt`` names."""
        return str(self.key.thumbprint())

    def proof(self, method: str, url: str) -> str:
        """A proof for one request (RFC 9449 §4.2): a new ``jti``, ``iat`` now."""
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        claims: dict[str, Any] = {
            "jti": uuid.uuid4().hex,
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if self.nonce is not None:
            claims["nonce"] = self.nonce
        return jwt.encode(header, claims, self.key, algorithms=["ES256"])


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    attempts: int  # 2 when sts asked for a nonce first


def exchange(
    session: DpopSession,
    token_url: str,
    client: tuple[str, str],
    subject_token: str,
    audience: str,
    *,
    subject_token_type: str = JWT_TYPE,
    scope: str | None = None,
    public_url: str | None = None,
    actor_token: str | None = None,
    actor_token_type: str = JWT_TYPE,
    client_auth: str = "basic",
) -> Answer:
    """POST the exchange with a proof; once more with a new proof if sts asks for a nonce.
    ``public_url``: the token endpoint as sts names it (``STS_ISSUER`` + ``/token``), which
    the proof's ``htu`` must match, when ``token_url`` reaches it another way.
    ``client_auth``: ``basic`` (client_secret_basic) or ``post`` (client_secret_post), the
    method the client is registered with."""
    if client_auth not in ("basic", "post"):
        raise ValueError(f"client_auth must be 'basic' or 'post', not {client_auth!r}")
    if urlsplit(token_url).scheme not in ("https", "http"):  # never file: or others
        raise ValueError(f"not an http(s) URL: {token_url!r}")
    htu = public_url or token_url
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": subject_token_type,
        "audience": audience,
        **({"scope": scope} if scope else {}),
        **(
            {"actor_token": actor_token, "actor_token_type": actor_token_type}
            if actor_token
            else {}
        ),
    }

    def send() -> tuple[int, dict[str, Any]]:
        status, body, nonce = _post(
            token_url, form, client, session.proof("POST", htu), client_auth
        )
        if nonce is not None:
            session.nonce = nonce  # §8.2: keep the newest for the next proof
        return status, body

    status, body = send()
    if status == 400 and body.get("error") == "use_dpop_nonce":  # §8: once, with its nonce
        return Answer(*send(), attempts=2)
    return Answer(status, body, attempts=1)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the client's secret and proof to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is then raised as an HTTPError, and answered as such


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(
    url: str, form: dict[str, str], client: tuple[str, str], proof: str, client_auth: str = "basic"
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "DPoP": proof}
    if client_auth == "post":  # client_secret_post: the id and secret in the form body
        form = {**form, "client_id": client[0], "client_secret": client[1]}
    else:
        # RFC 6749 §2.3.1: the id and secret are form-encoded before Basic's base64.
        credentials = f"{quote_plus(client[0])}:{quote_plus(client[1])}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (http(s) only: checked in exchange)
        url, data=urlencode(form).encode(), method="POST", headers=headers
    )
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, _json(response.read()), response.headers["DPoP-Nonce"]
    except urllib.error.HTTPError as error:  # an OAuth error answer: 4xx with a JSON body
        return error.code, _json(error.read()), error.headers["DPoP-Nonce"]


def _json(body: bytes) -> dict[str, Any]:
    """The answer's JSON object; a proxy's HTML error page or anything else is reported
    as such rather than raised."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    return document if isinstance(document, dict) else {"error": "not_an_oauth_answer"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret-file", type=Path, required=True)
    parser.add_argument("--client-auth", choices=("basic", "post"), default="basic")
    parser.add_argument("--subject-token-file", type=Path, required=True)
    parser.add_argument("--subject-token-type", default=JWT_TYPE)
    parser.add_argument("--actor-token-file", type=Path)
    parser.add_argument("--actor-token-type", default=JWT_TYPE)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--scope")
    parser.add_argument("--public-url", help="the token endpoint as sts names it, if another")
    args = parser.parse_args(argv)
    secret = args.client_secret_file.read_text().strip()
    subject = args.subject_token_file.read_text().strip()
    actor = args.actor_token_file.read_text().strip() if args.actor_token_file else None
    session = DpopSession()
    answer = exchange(
        session,
        args.token_url,
        (args.client_id, secret),
        subject,
        args.audience,
        subject_token_type=args.subject_token_type,
        scope=args.scope,
        public_url=args.public_url,
        actor_token=actor,
        actor_token_type=args.actor_token_type,
        client_auth=args.client_auth,
    )
    print(json.dumps({"dpop_jkt": session.thumbprint, **answer.body}, indent=2))
    return 0 if answer.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
