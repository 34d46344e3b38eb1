"""What a per-source limit counts (sts.ratelimit.source_key), and the limiter's window."""

from __future__ import annotations

import pytest

from sts.ratelimit import GlobalBudget, RateLimiter, source_key


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


def test_a_budget_per_process_holds_within_its_window_and_says_when_it_ends() -> None:
    """Without Redis: one fixed window of wall time; ``spent`` only looks."""
    seconds = [120.0 + 15]
    budget = GlobalBudget(2, window=60.0, wall=lambda: seconds[0])
    assert budget.spent() is None
    assert [budget.take(), budget.take(), budget.take()] == [None, None, 45]
    assert budget.spent() == 45
    seconds[0] = 179.5
    assert budget.spent() == 1  # never 0: Retry-After counts whole seconds
    seconds[0] = 180.0
    assert budget.spent() is None
    assert budget.take() is None
