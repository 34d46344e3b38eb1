"""examples/dpop_client.py against small HTTP servers on 127.0.0.1 (its exchange with a
real sts is in tests/rules/test_live_dpop.py): what it sends, and what it refuses to do."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import pytest


def load_example_client() -> ModuleType:
    """``examples/dpop_client.py``, the client the README points adopters to."""
    path = Path(__file__).resolve().parents[2] / "examples" / "dpop_client.py"
    spec = importlib.util.spec_from_file_location("dpop_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dpop_client"] = module  # dataclasses resolve their module's annotations
    spec.loader.exec_module(module)
    return module


@contextmanager
def http_server(status: int, body: bytes, headers: dict[str, str]) -> Iterator[tuple[str, list]]:
    """A server answering every POST alike; yields its URL and the requests' headers."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            seen.append({**dict(self.headers), "_form": form})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/token", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_not_followed_with_the_secret_and_proof() -> None:
    client = load_example_client()
    # urllib follows a 302 to a POST as a GET, with every header (Authorization, DPoP).
    with (
        http_server(200, b"{}", {}) as (elsewhere, seen_elsewhere),
        http_server(302, b"", {"Location": elsewhere}) as (token_url, _),
    ):
        answer = client.exchange(client.DpopSession(), token_url, ("c", "s"), "t", "aud")
    assert (answer.status, answer.body) == (302, {"error": "not_an_oauth_answer"})
    assert seen_elsewhere == []


def test_the_client_credentials_are_form_encoded_before_basic() -> None:
    """RFC 6749 §2.3.1 (sts decodes them so: a secret with "+" or "%" reaches it whole)."""
    client = load_example_client()
    error = json.dumps({"error": "invalid_client"}).encode()
    with http_server(401, error, {}) as (token_url, seen):
        answer = client.exchange(
            client.DpopSession(), token_url, ("ci+runner", "p+s%41:w"), "t", "a"
        )
    assert answer.status == 401
    scheme, _, encoded = seen[0]["Authorization"].partition(" ")
    client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
    assert (scheme, unquote_plus(client_id), unquote_plus(secret)) == (
        "Basic",
        "ci+runner",
        "p+s%41:w",
    )


def test_an_agent_sends_its_actor_token_and_client_secret_post() -> None:
    """The README's agent (examples/ai-agent.yaml): an API key as subject token, an actor
    token, and a client registered for client_secret_post (no Authorization header)."""
    client = load_example_client()
    with http_server(200, b"{}", {}) as (token_url, seen):
        client.exchange(
            client.DpopSession(),
            token_url,
            ("agent-runtime", "s+cret"),
            "stsk_key",
            "aud",
            subject_token_type="urn:sts:params:oauth:token-type:api-key",
            actor_token="agent.jwt",
            client_auth="post",
        )
    form = parse_qs(seen[0]["_form"])
    assert "Authorization" not in seen[0]
    assert form["client_id"] == ["agent-runtime"]
    assert form["client_secret"] == ["s+cret"]
    assert form["subject_token_type"] == ["urn:sts:params:oauth:token-type:api-key"]
    assert form["actor_token"] == ["agent.jwt"]
    assert form["actor_token_type"] == ["urn:ietf:params:oauth:token-type:jwt"]
    with pytest.raises(ValueError, match="client_auth"):
        client.exchange(client.DpopSession(), token_url, ("c", "s"), "t", "a", client_auth="jwt")


def test_a_proxy_error_page_is_reported_not_raised() -> None:
    client = load_example_client()
    with http_server(502, b"<html>Bad Gateway</html>", {}) as (token_url, _):
        answer = client.exchange(client.DpopSession(), token_url, ("c", "s"), "t", "aud")
    assert (answer.status, answer.body) == (502, {"error": "not_an_oauth_answer"})


def test_only_http_urls_are_opened() -> None:
    client = load_example_client()
    with pytest.raises(ValueError, match="not an http"):
        client.exchange(client.DpopSession(), "file:///etc/passwd", ("c", "s"), "t", "aud")
