"""POST /token is served from the WSGI environ (sts.web.token.DirectToken) for ordinary
requests, and by the Flask route otherwise: both must answer the same bytes."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client, TestResponse

from sts.protocol import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from sts.web.token import DirectToken
from tests.integration.world import CI_SECRET, DEPLOY, VAULT, World

FORM = "application/x-www-form-urlencoded"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def exchange_form(world: World, **params: str) -> list[tuple[str, str]]:
    return [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", world.ci_token()),
        ("subject_token_type", TOKEN_TYPE_JWT),
        *params.items(),
    ]


def requests(world: World) -> dict[str, tuple[bytes, str, str | None]]:
    """(body, Content-Type, Authorization) of ordinary requests, granted and refused."""
    good = basic("ci-runner", CI_SECRET)
    return {
        "granted": (urlencode(exchange_form(world, audience=DEPLOY)).encode(), FORM, good),
        "charset-parameter": (
            urlencode(exchange_form(world, audience=DEPLOY)).encode(),
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            good,
        ),
        "wrong-secret": (
            urlencode(exchange_form(world, audience=DEPLOY)).encode(),
            FORM,
            basic("ci-runner", "wrong"),
        ),
        "no-client": (urlencode(exchange_form(world, audience=DEPLOY)).encode(), FORM, None),
        "target-not-allowed": (
            urlencode(exchange_form(world, audience=VAULT)).encode(),
            FORM,
            good,
        ),
        "no-grant-type": (b"subject_token=x", FORM, good),
        "unsupported-grant": (b"grant_type=password", FORM, good),
        "repeated-grant": (b"grant_type=a&grant_type=b", FORM, good),
        "json-body": (
            json.dumps({"grant_type": GRANT_TOKEN_EXCHANGE}).encode(),
            "application/json",
            good,
        ),
        "no-content-type": (b"grant_type=x", "", good),
        "not-utf8": (b"grant_type=%FF%FE", FORM, good),
        "too-many-fields": ("&".join(f"f{i}=x" for i in range(65)).encode(), FORM, good),
        "empty-body": (b"", FORM, good),
    }


def post(client: Client, body: bytes, content_type: str, authorization: str | None) -> TestResponse:
    headers = {"Authorization": authorization} if authorization else {}
    return client.post("/token", data=body, content_type=content_type, headers=headers)


def comparable(response: TestResponse) -> tuple[str, list[tuple[str, str]], dict[str, object]]:
    body = response.get_json()
    assert isinstance(body, dict)
    if "access_token" in body:  # a fresh jti and signature each time
        body["access_token"] = "<token>"
    headers = [(k, v) for k, v in response.headers.items() if k != "Content-Length"]
    return response.status, headers, body


def test_ordinary_token_requests_skip_flask_and_answer_the_same(world: World) -> None:
    direct = world.app.wsgi_app
    assert isinstance(direct, DirectToken)
    via_flask = Client(direct.app)  # the Flask app behind the direct path
    via_direct = Client(direct)
    for name, (body, content_type, authorization) in requests(world).items():
        fast = post(via_direct, body, content_type, authorization)
        slow = post(via_flask, body, content_type, authorization)
        assert comparable(fast) == comparable(slow), name
        if "access_token" not in fast.get_json():
            assert fast.data == slow.data, name  # errors: byte for byte
    granted = post(via_direct, *requests(world)["granted"])
    assert granted.status_code == 200
    assert granted.headers["Cache-Control"] == "no-store"  # RFC 6749 §5.1
    assert granted.headers["Content-Length"] == str(len(granted.data))
    refused = post(via_direct, *requests(world)["wrong-secret"])
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")  # RFC 6749 §5.2


def test_a_body_without_a_declared_length_is_read_by_flask(world: World) -> None:
    # Chunked transfer: no Content-Length; the server marks the input as terminated.
    body, content_type, authorization = requests(world)["granted"]
    response = world.client.post(
        "/token",
        input_stream=io.BytesIO(body),
        content_type=content_type,
        headers={"Authorization": authorization or ""},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.get_json()
    assert "access_token" in response.get_json()


@pytest.mark.parametrize("declared", ["10", "-1", "abc", "\u0661\u0660"])
def test_a_short_or_malformed_length_is_refused(world: World, declared: str) -> None:
    body, content_type, authorization = requests(world)["granted"]
    response = world.client.post(
        "/token",
        input_stream=io.BytesIO(body[:5]),
        content_type=content_type,
        headers={"Authorization": authorization or "", "Content-Length": declared},
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
