from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sts.credentials import (
    API_KEY_PREFIX,
    generate_api_key,
    hash_secret,
    is_secret_hash,
    parse_api_key,
    secret_matches,
)
from sts.policy.evaluate import Allow
from sts.policy.rules import compile_rule
from sts.tokens.claims import act_depth, actor_claim, build_claims, compute_lifetime, new_token_id

NOW = datetime(2026, 1, 1, tzinfo=UTC)

LIFETIMES = [
    ("rule", dict(rule_max_ttl=300, global_cap=900, subject=None, actor=None), (300, "rule")),
    ("cap", dict(rule_max_ttl=3600, global_cap=900, subject=None, actor=None), (900, "cap")),
    (
        "subject",
        dict(rule_max_ttl=300, global_cap=900, subject=120, actor=None),
        (120, "subject_token"),
    ),
    ("actor", dict(rule_max_ttl=300, global_cap=900, subject=200, actor=60), (60, "actor_token")),
    (
        "expired",
        dict(rule_max_ttl=300, global_cap=900, subject=-5, actor=None),
        (-5, "subject_token"),
    ),
]


@pytest.mark.parametrize(
    ("inputs", "expected"), [c[1:] for c in LIFETIMES], ids=[c[0] for c in LIFETIMES]
)
def test_lifetime_never_outlives_its_inputs(inputs: dict, expected: tuple[int, str]) -> None:  # type: ignore[type-arg]
    def at(seconds: int | None) -> datetime | None:
        return None if seconds is None else NOW + timedelta(seconds=seconds)

    lifetime = compute_lifetime(
        rule_max_ttl=inputs["rule_max_ttl"],
        global_cap=inputs["global_cap"],
        now=NOW,
        subject_expires_at=at(inputs["subject"]),
        actor_expires_at=at(inputs["actor"]),
    )
    assert (lifetime.seconds, lifetime.limited_by) == expected


def test_act_nests_with_the_current_actor_outermost() -> None:
    # RFC 8693 §4.1
    first = actor_claim("agent-1", "https://a", None)
    second = actor_claim("agent-2", "https://a", first)
    assert second == {
        "sub": "agent-2",
        "iss": "https://a",
        "act": {"sub": "agent-1", "iss": "https://a"},
    }
    assert act_depth(second) == 2
    assert act_depth(None) == 0


def test_api_key_format_and_checksum() -> None:
    key = generate_api_key()
    assert key.key.startswith(API_KEY_PREFIX)
    assert parse_api_key(key.key) == key.key_id
    assert secret_matches(key.key, key.secret_hash)
    assert is_secret_hash(key.secret_hash)
    flipped = key.key[:-7] + ("A" if key.key[-7] != "A" else "B") + key.key[-6:]
    assert parse_api_key(flipped) is None  # checksum catches a changed character
    assert parse_api_key(key.key + "x") is None
    assert parse_api_key("ghp_" + key.key[4:]) is None
    assert not secret_matches(flipped, key.secret_hash)


def test_secret_hash_is_not_the_secret() -> None:
    hashed = hash_secret("a-secret-of-decent-length")
    assert "a-secret" not in hashed
    assert is_secret_hash(hashed)
    assert not is_secret_hash("a-secret-of-decent-length")


def test_token_ids_sort_by_issuance_and_never_repeat() -> None:
    # RFC 7519 §4.1.7: unique; sts also puts the issuance millisecond first.
    times = [NOW + timedelta(milliseconds=step) for step in (0, 1, 999, 1000, 86_400_000)]
    ids = [new_token_id(moment) for moment in times]
    assert ids == sorted(ids)
    assert ids[0][:12] == f"{int(NOW.timestamp() * 1000):012x}"
    same_moment = {new_token_id(NOW) for _ in range(10_000)}
    assert len(same_moment) == 10_000
    assert all(len(token_id) == 28 for token_id in same_moment)
    # The random part: 16 base64url characters (96 bits), different for every id.
    assert len({token_id[12:] for token_id in same_moment}) == 10_000
    assert all(set(token_id[12:]) <= set(BASE64URL) for token_id in same_moment)


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize(
    ("subject_claims", "expected"),
    [
        ({}, None),  # nothing to carry
        ({"may_act": {"sub": "agent-1"}}, {"sub": "agent-1"}),
        # RFC 7519 §4.1.2: a sub in the subject token's issuer's context; written in
        (
            {"iss": "https://ci", "may_act": {"sub": "agent-1"}},
            {"sub": "agent-1", "iss": "https://ci"},
        ),
        (
            {"iss": "https://ci", "may_act": {"sub": "agent-1", "iss": "https://agents"}},
            {"sub": "agent-1", "iss": "https://agents"},
        ),
        ({"may_act": "agent-1"}, "agent-1"),  # malformed, carried as it is: refuses actors later
    ],
)
def test_may_act_is_carried_from_the_subject_token(
    subject_claims: dict[str, object], expected: object
) -> None:
    definition = {"subject_token": {"issuer": "ci"}, "allow": {"audiences": ["a"], "max_ttl": 60}}
    rule = compile_rule(1, "r", 1, definition)
    claims = build_claims(
        issuer="https://sts",
        subject="s",
        decision=Allow(rule, ("a",), (), 60, ()),
        jti="j",
        now=NOW,
        lifetime=60,
        client_id=None,
        act=None,
        subject_claims=subject_claims,
    )
    assert claims.get("may_act") == expected
