"""sts.tokens.dpop_nonce: server-provided DPoP nonces (RFC 9449 §8), stateless: a window's
number and its HMAC under a secret the instances share, accepted in its window and the
next."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest

from sts.tokens.dpop_nonce import DpopNonces

SECRET = "s" * 32
START = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)  # a window boundary for 120 s
# RFC 9449 §8.1: nonce = 1*NQCHAR; NQCHAR = %x21 / %x23-5B / %x5D-7E
NQCHARS = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def nonces(secret: str = SECRET, lifetime: int = 120) -> DpopNonces:
    return DpopNonces(secret, lifetime)


def test_a_nonce_is_accepted_in_its_window_and_the_next() -> None:
    issuer = nonces()
    nonce = issuer.current(START)
    assert issuer.accepts(nonce, START)
    assert issuer.accepts(nonce, START + timedelta(seconds=119))
    assert issuer.accepts(nonce, START + timedelta(seconds=239))
    assert not issuer.accepts(nonce, START + timedelta(seconds=240))


def test_one_nonce_per_window() -> None:
    issuer = nonces()
    assert issuer.current(START) == issuer.current(START + timedelta(seconds=119))
    assert issuer.current(START) != issuer.current(START + timedelta(seconds=120))


def test_a_nonce_of_a_later_window_is_not_accepted_early() -> None:
    """Only this window's and the previous one's: a nonce from the future is not one this
    service could have handed out yet."""
    issuer = nonces()
    later = issuer.current(START + timedelta(seconds=120))
    assert not issuer.accepts(later, START)


def test_every_instance_with_the_secret_accepts_it_and_no_other() -> None:
    nonce = nonces().current(START)
    assert nonces().accepts(nonce, START)  # another worker or replica
    assert not nonces("t" * 32).accepts(nonce, START)


def test_a_nonce_with_a_forged_mac_is_refused() -> None:
    issuer = nonces()
    raw = bytearray(base64.urlsafe_b64decode(issuer.current(START) + "=="))
    raw[-1] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert not issuer.accepts(forged, START)


@pytest.mark.parametrize(
    "value",
    [None, 5, "", "x", "A" * 31, "A" * 33, "*" * 32, "é" * 32, ["nonce"]],
)
def test_what_is_not_a_nonce_is_refused(value: object) -> None:
    assert not nonces().accepts(value, START)


def test_only_the_nonce_as_handed_out_is_accepted() -> None:
    """RFC 9449 §4.3 check 10: the claim matches the server's nonce. A base64 decoder
    also reads "+/" for "-_" and skips stray characters; such spellings are refused."""
    issuer = nonces()
    for step in range(64):  # until a nonce has a "-" or "_" to respell
        now = START + timedelta(seconds=120 * step)
        nonce = issuer.current(now)
        if "-" in nonce or "_" in nonce:
            break
    else:
        pytest.fail("no nonce with - or _ in 64 windows")
    assert issuer.accepts(nonce, now)
    assert not issuer.accepts(nonce.replace("-", "+").replace("_", "/"), now)
    assert not issuer.accepts(nonce[:-1] + "=", now)


def test_a_nonce_is_made_of_nqchars() -> None:
    issuer = nonces()
    for step in range(50):
        nonce = issuer.current(START + timedelta(seconds=120 * step))
        assert NQCHARS.fullmatch(nonce)


def test_a_short_secret_or_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        DpopNonces("s" * 31, 120)
    with pytest.raises(ValueError, match="lifetime"):
        DpopNonces(SECRET, 0)


OLD_SECRET = "o" * 32


def test_during_a_rotation_the_previous_secrets_nonces_are_still_accepted() -> None:
    """Replicas roll from one secret to the next at different times: a nonce one of them
    handed out under the previous secret is accepted by one on the new secret (and the
    new one's by a replica that names the new secret as previous), within its windows."""
    old = nonces(OLD_SECRET)
    rolled = DpopNonces(SECRET, 120, previous=OLD_SECRET)
    nonce = old.current(START)
    assert not nonces().accepts(nonce, START)  # without the previous secret: refused
    assert rolled.accepts(nonce, START)
    assert rolled.accepts(nonce, START + timedelta(seconds=239))
    assert not rolled.accepts(nonce, START + timedelta(seconds=240))  # its windows only
    assert rolled.current(START) == nonces().current(START)  # hands out the new secret's
    assert DpopNonces(OLD_SECRET, 120, previous=SECRET).accepts(rolled.current(START), START)


def test_the_previous_secret_must_be_as_long_as_a_secret() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        DpopNonces(SECRET, 120, previous="p" * 31)
