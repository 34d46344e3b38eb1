"""The pure parts: status list encoding, post-issuance re-grant, identities of an exchange."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime

import pytest

from sts.policy.evaluate import Allow, Deny, TokenFacts, regrant
from sts.policy.rules import compile_rule
from sts.revocation import (
    identities_of,
    issuer_scoped,
    names_upstream_token,
    upstream_token_block_names,
)
from sts.tokens.exposure import upstream_token_names
from sts.tokens.status_list import build_status_list_claims, encode_status_list, status_claim
from sts.tokens.verify import token_fingerprint


def decode(lst: str) -> bytes:
    return zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)))


@pytest.mark.parametrize(
    ("size", "invalid", "expected"),
    [
        (8, [], b"\x00"),
        (8, [0], b"\x01"),  # index 0: least significant bit of byte 0
        (8, [7], b"\x80"),
        (16, [8], b"\x00\x01"),
        (16, [0, 1, 3, 15], b"\x0b\x80"),
        # The draft's example: statuses 1,0,0,1,1,1,0,1 | 1,1,0,0,0,1,0,1 -> B9 A3.
        (16, [0, 3, 4, 5, 7, 8, 9, 13, 15], b"\xb9\xa3"),
    ],
    ids=["empty", "first", "last-of-byte", "second-byte", "several", "draft-example"],
)
def test_encode_status_list(size: int, invalid: list[int], expected: bytes) -> None:
    lst = encode_status_list(size, invalid)
    assert "=" not in lst
    assert decode(lst) == expected


def test_status_list_claims() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    claims = build_status_list_claims(
        uri="https://sts.test/statuslists/1", size=8, invalid=[2], now=now, ttl=60, lifetime=900
    )
    assert claims["sub"] == "https://sts.test/statuslists/1"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["ttl"] == 60
    assert claims["status_list"]["bits"] == 1
    assert decode(claims["status_list"]["lst"]) == b"\x04"
    assert status_claim("u", 5) == {"status_list": {"idx": 5, "uri": "u"}}


RULE = {
    "subject_token": {"sts": True},
    "allow": {"audiences": ["A", "B"], "scopes": ["r", "w"], "max_ttl": 60, "max_audiences": 2},
}


@pytest.mark.parametrize(
    ("allow", "audiences", "scopes", "granted"),
    [
        ({}, ["A"], ["r"], True),
        ({}, ["A", "B"], ["r", "w"], True),
        ({}, ["A"], [], True),
        ({"scopes": ["r"]}, ["A"], ["w"], False),
        ({"audiences": ["B"]}, ["A"], ["r"], False),
        ({"max_audiences": 1}, ["A", "B"], ["r"], False),
    ],
    ids=["same", "all", "no-scope", "scope-removed", "audience-removed", "fewer-audiences"],
)
def test_regrant(
    allow: dict[str, object], audiences: list[str], scopes: list[str], granted: bool
) -> None:
    definition = {**RULE, "allow": {**RULE["allow"], **allow}}  # type: ignore[dict-item]
    rule = compile_rule(1, "r", 2, definition)
    decision = regrant(rule, audiences, scopes)
    assert isinstance(decision, Allow if granted else Deny)


def test_regrant_refuses_a_rule_turned_deny() -> None:
    rule = compile_rule(1, "r", 3, {"effect": "deny", "subject_token": {"sts": True}})
    assert isinstance(regrant(rule, ["A"], ["r"]), Deny)


def test_identities_of_an_exchange() -> None:
    subject = TokenFacts("credential", "agent-key", "https://sts.test", "team")
    actor = TokenFacts("issuer", "agents", "https://agents.test", "agent-7")
    assert identities_of("agent-runtime", subject, actor) == [
        ("subject", "team"),
        ("issuer", "https://sts.test"),
        ("client", "agent-runtime"),
        ("credential", "agent-key"),
        ("actor", "agent-7"),
        ("issuer", "https://agents.test"),
    ]
    anonymous = TokenFacts("issuer", "ci", "https://ci.test", "repo")
    assert identities_of(None, anonymous, None) == [
        ("subject", "repo"),
        ("issuer", "https://ci.test"),
    ]
    # The upstream JWTs presented are named too: a leaked one is blocked on its own.
    assert identities_of(None, anonymous, None, ["jti-1"]) == [
        ("subject", "repo"),
        ("issuer", "https://ci.test"),
        ("upstream_token", "jti-1"),
    ]


def test_a_block_names_an_upstream_token_under_every_issuer_or_under_one() -> None:
    """RFC 7519 §4.1.7: a jti is unique per issuer. An operator's block names the id alone
    (every issuer); an exposure report's names it under the reported token's issuer."""
    bare, scoped = upstream_token_block_names("jti 1", "https://ci.test")
    assert bare == "jti 1"
    assert (
        scoped
        == issuer_scoped("https://ci.test", "jti 1")
        != issuer_scoped("https://other.test", "jti 1")
    )
    assert scoped.startswith("iss:") and scoped.endswith(" jti 1")
    assert len(issuer_scoped("https://" + "i" * 2040, "j" * 255)) <= 2048  # fits the row
    assert names_upstream_token(bare, "jti 1") and names_upstream_token(scoped, "jti 1")
    assert not names_upstream_token(scoped, "1")
    assert not names_upstream_token("jti 1", "1")  # a bare id with a space is not scoped


def test_an_upstream_token_is_named_by_its_jti_else_its_fingerprint() -> None:
    def unsigned(claims: dict[str, object]) -> str:
        part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJFUzI1NiJ9.{part}.c2ln"

    with_jti = unsigned({"sub": "repo:acme", "jti": "j-1", "iss": "https://ci"})
    assert upstream_token_names(with_jti) == ("j-1", "repo:acme", "https://ci")
    without = unsigned({"sub": "repo:acme"})
    assert upstream_token_names(without) == (token_fingerprint(without), "repo:acme", None)
    odd = unsigned({"jti": "", "sub": 7, "iss": 8})
    assert upstream_token_names(odd) == (token_fingerprint(odd), None, None)
    assert upstream_token_names("not a jwt") == (token_fingerprint("not a jwt"), None, None)


def test_a_fingerprint_names_the_signed_part_of_a_jws_only() -> None:
    """A second valid signature (ECDSA's (r, n - s)) must not give a token a second name."""
    assert token_fingerprint("aGVhZA.Ym9keQ.c2ln") == token_fingerprint("aGVhZA.Ym9keQ.other")
    assert token_fingerprint("aGVhZA.Ym9keQ.c2ln") != token_fingerprint("aGVhZA.Ym9keR.c2ln")
    assert token_fingerprint("no dots") != token_fingerprint("no dots either")
