"""A fixed-window rate limiter per key (e.g. source address), in process memory.

Per process on purpose: it needs no shared store, and with N workers the effective limit
is at most N times the setting (documented). Time is injected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
