"""What a per-source limit counts (sts.ratelimit.source_key), and the limiter's window."""

from __future__ import annotations

import pytest

from sts.ratelimit import RateLimiter, source_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same /64
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next one
        ("::ffff:198.51.100.7", "198.51.100.7"),  # an IPv4 address, as IPv6 sockets see it
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_host_is_counted_by_its_64(address: str, key: str) -> None:
    assert source_key(address) == key


def test_the_limit_holds_per_key_within_the_window() -> None:
    seconds = [0.0]
    limiter = RateLimiter(2, window=60.0, monotonic=lambda: seconds[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")
    seconds[0] = 60.0
    assert limiter.allow("a")
