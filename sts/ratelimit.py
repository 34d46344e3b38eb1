"""A fixed-window rate limiter per key (e.g. source address), in process memory.

Per process on purpose: it needs no shared store, and with N workers the effective limit
is at most N times the setting (documented). Time is injected.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable

# An IPv6 host is commonly given a whole /64 (RFC 7421 §1, RFC 8273): counted per address,
# one host could change its address for every request. IPv4 addresses count one by one.
IPV6_HOST_PREFIX = 64


def source_key(address: str) -> str:
    """What a per-source limit counts: an IPv4 address, or the /64 an IPv6 one is in."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d is that IPv4 address
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_HOST_PREFIX}", strict=False))
    return str(parsed)


class RateLimiter:
    def __init__(
        self, limit: int, window: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.monotonic = monotonic
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.monotonic()
        with self._lock:
            started, count = self._counts.get(key, (now, 0))
            if now - started >= self.window:
                started, count = now, 0
            if count >= self.limit:
                return False
            self._counts[key] = (started, count + 1)
            if len(self._counts) > 100_000:  # bounded memory under a flood of addresses
                self._forget_expired(now)
            return True

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, (started, _) in self._counts.items() if now - started >= self.window]
        for key in expired:
            del self._counts[key]
