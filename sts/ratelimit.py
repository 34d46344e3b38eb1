"""Rate limits. Time is injected.

:class:`RateLimiter`: a fixed-window limit per key (e.g. source address), in process
memory. Per process on purpose: it needs no shared store, and with N workers the effective
limit is at most N times the setting (documented).

:class:`GlobalBudget`: one fixed-window budget for the whole service, counted in Redis
where ``STS_REDIS_URL`` is set (shared by every replica), in process memory otherwise, and
also while Redis fails or is slow: it fails open to a budget per process, never to none.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

# How long a call to Redis may take (connect, then each reply): a budget check sits on the
# request path, and redis-py's defaults (5 s, ten retries) would hold a request for about
# a minute while Redis does not answer. A URL's own ``socket_timeout`` /
# ``socket_connect_timeout`` query options win.
REDIS_TIMEOUT = 0.25
# After Redis failed, the process counts on its own for this long before trying Redis
# again, so that an unreachable Redis costs at most one timeout per this period.
REDIS_RETRY_AFTER = 5.0

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


def redis_client(url: str) -> Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://``, ``unix://``) that gives up
    after :data:`REDIS_TIMEOUT` and never retries on its own."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


class GlobalBudget:
    """At most ``limit`` uses per fixed window of ``window`` seconds, across every caller
    and, with Redis, every replica (one counter key per window, expiring after two).

    Fail open, to a per-process budget: without Redis, and while Redis fails or does not
    answer within :data:`REDIS_TIMEOUT` (then for :data:`REDIS_RETRY_AFTER`), each process
    counts its own uses against the same ``limit``. Whatever this budget guards (taking the
    governance lock for an exposure report) is then bounded by N times the limit with N
    processes, and does not depend on Redis being up."""

    def __init__(
        self,
        limit: int,
        window: float,
        redis: Redis | None = None,
        key: str = "sts:budget",
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.redis = redis
        self.key = key
        self.wall = wall  # the window's start: wall time, so that replicas agree on it
        self.monotonic = monotonic
        self._local: tuple[int, int] = (-1, 0)  # (window index, uses) in this process
        self._redis_down_until = -math.inf
        self._lock = threading.Lock()

    def spent(self) -> int | None:
        """Seconds until the current window ends if the budget is spent in it, else None.
        Uses nothing."""
        index, retry_after = self._window()
        count = self._redis_count(index, increment=False)
        if count is None:
            count = self._local_count(index, increment=False)
        return retry_after if count >= self.limit else None

    def take(self) -> int | None:
        """Use one: None if there was one left in this window, else the seconds until the
        window ends."""
        index, retry_after = self._window()
        count = self._redis_count(index, increment=True)
        if count is None:
            count = self._local_count(index, increment=True)
        return None if count <= self.limit else retry_after

    def redis_status(self) -> str | None:
        """For /readyz: None without Redis; "ok" when it answers a PING within
        :data:`REDIS_TIMEOUT`; else what the budget does meanwhile (it never refuses for
        want of Redis)."""
        if self.redis is None:
            return None
        from redis.exceptions import RedisError

        try:
            self.redis.ping()
        except RedisError as exc:
            log.warning("readiness: Redis unavailable: %s", type(exc).__name__)
            return "unavailable: limits counted per process"
        return "ok"

    def _window(self) -> tuple[int, int]:
        now = self.wall()
        index = math.floor(now / self.window)
        return index, max(1, math.ceil((index + 1) * self.window - now))

    def _local_count(self, index: int, *, increment: bool) -> int:
        with self._lock:
            started, count = self._local
            if started != index:
                count = 0
            if increment:
                count += 1
                self._local = (index, count)
            return count

    def _redis_count(self, index: int, *, increment: bool) -> int | None:
        """The window's count in Redis (after adding one), or None: no Redis, or it failed
        (then not tried again for :data:`REDIS_RETRY_AFTER`)."""
        if self.redis is None or self.monotonic() < self._redis_down_until:
            return None
        from redis.exceptions import RedisError

        key = f"{self.key}:{index}"
        try:
            if not increment:
                value = self.redis.get(key)
                return int(value) if value is not None else 0
            pipeline = self.redis.pipeline(transaction=True)
            pipeline.incr(key)
            pipeline.expire(key, math.ceil(2 * self.window))
            count, _ = pipeline.execute()
            return int(count)
        except (RedisError, ValueError) as exc:
            # Never the URL: it may carry a password.
            log.warning(
                "Redis unavailable (%s): counting %s per process for %.0f s",
                type(exc).__name__,
                self.key,
                REDIS_RETRY_AFTER,
            )
            self._redis_down_until = self.monotonic() + REDIS_RETRY_AFTER
            return None
