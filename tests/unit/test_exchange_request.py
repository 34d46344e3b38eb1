"""RFC 8693 §2.1 request parsing: every parameter rule, including the refusals."""

from __future__ import annotations

import pytest

from sts.errors import InvalidRequest, InvalidScope, InvalidTarget, OAuthError
from sts.protocol import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from sts.protocol.exchange import parse_token_exchange_request

BASE = [("subject_token", "t"), ("subject_token_type", TOKEN_TYPE_JWT)]


def parse(*extra: tuple[str, str], base: list[tuple[str, str]] = BASE):  # type: ignore[no-untyped-def]
    return parse_token_exchange_request([("grant_type", "x"), *base, *extra])


REFUSALS: list[tuple[str, list[tuple[str, str]], type[OAuthError], str]] = [
    (
        "missing subject_token",
        [("subject_token_type", TOKEN_TYPE_JWT)],
        InvalidRequest,
        "Missing subject_token.",
    ),
    (
        "missing subject_token_type",
        [("subject_token", "t")],
        InvalidRequest,
        "Missing subject_token_type.",
    ),
    (
        "unknown subject_token_type",
        [("subject_token", "t"), ("subject_token_type", "urn:x:saml")],
        InvalidRequest,
        "The subject_token_type is not supported.",
    ),
    (
        "repeated subject_token",
        [*BASE, ("subject_token", "u")],
        InvalidRequest,
        "Parameter subject_token is repeated.",
    ),
    (
        "repeated scope",
        [*BASE, ("scope", "a"), ("scope", "b")],
        InvalidRequest,
        "Parameter scope is repeated.",
    ),
    (
        "repeated requested_token_type",
        [*BASE, ("requested_token_type", TOKEN_TYPE_JWT), ("requested_token_type", TOKEN_TYPE_JWT)],
        InvalidRequest,
        "Parameter requested_token_type is repeated.",
    ),
    (
        "actor_token without type",
        [*BASE, ("actor_token", "a")],
        InvalidRequest,
        "actor_token_type is required with actor_token.",
    ),
    (
        "actor_token_type without token",
        [*BASE, ("actor_token_type", TOKEN_TYPE_JWT)],
        InvalidRequest,
        "actor_token_type must not be sent without actor_token.",
    ),
    (
        "unknown actor_token_type",
        [*BASE, ("actor_token", "a"), ("actor_token_type", "urn:x")],
        InvalidRequest,
        "The actor_token_type is not supported.",
    ),
    (
        "requested refresh token",
        [*BASE, ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")],
        InvalidRequest,
        "The requested_token_type cannot be issued",
    ),
    (
        "relative resource",
        [*BASE, ("resource", "/api")],
        InvalidTarget,
        "Each resource must be an absolute URI",
    ),
    (
        "resource with fragment",
        [*BASE, ("resource", "https://api#x")],
        InvalidTarget,
        "Each resource must be an absolute URI",
    ),
    (
        "malformed scope",
        [*BASE, ("scope", 'a  "b')],
        InvalidScope,
        "The scope parameter is malformed.",
    ),
]


@pytest.mark.parametrize(
    ("form", "error", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals(form: list[tuple[str, str]], error: type[OAuthError], message: str) -> None:
    with pytest.raises(error) as caught:
        parse_token_exchange_request([("grant_type", "x"), *form])
    assert caught.value.description.startswith(message)


def test_audience_and_resource_may_repeat() -> None:
    request = parse(
        ("audience", "a"),
        ("audience", "b"),
        ("resource", "https://r/1"),
        ("resource", "https://r/2"),
    )
    assert request.audiences == ("a", "b")
    assert request.resources == ("https://r/1", "https://r/2")
    assert request.targets == ("a", "b", "https://r/1", "https://r/2")


def test_defaults() -> None:
    request = parse()
    assert request.scopes is None
    assert request.requested_token_type == TOKEN_TYPE_ACCESS_TOKEN
    assert request.actor_token is None and request.actor_token_type is None


def test_scope_is_space_delimited_and_deduplicated() -> None:
    assert parse(("scope", "b a b")).scopes == ("b", "a")


def test_unknown_parameters_are_ignored() -> None:
    # RFC 6749 §3.2: the server MUST ignore unrecognized request parameters.
    assert parse(("surprise", "1"), ("surprise2", "2")).subject_token == "t"


def test_unknown_parameters_are_ignored_even_repeated() -> None:
    assert parse(("surprise", "1"), ("surprise", "2")).subject_token == "t"


def test_parameters_without_a_value_are_omitted() -> None:
    """RFC 6749 §3.2: "Parameters sent without a value MUST be treated as if they were
    omitted from the request"."""
    blank = parse(
        ("audience", ""),
        ("audience", "a"),
        ("resource", ""),
        ("scope", ""),
        ("actor_token_type", ""),
        ("requested_token_type", ""),
        ("client_id", ""),
    )
    assert blank == parse(("audience", "a"))
    assert blank.scopes is None  # no scope parameter: the rule's default applies
