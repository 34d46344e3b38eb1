"""Time is injected: every component takes a clock, so tests fix it instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def from_numeric_date(value: object) -> datetime | None:
    """A JWT NumericDate (RFC 7519 §2) as a UTC datetime; None when the number is out of
    the range a datetime can hold (e.g. ``exp`` = 1e20, which a signature can carry and
    joserfc's checks let through)."""
    try:
        return datetime.fromtimestamp(int(value), UTC)  # type: ignore[call-overload]
    except (OverflowError, OSError, ValueError, TypeError):
        return None
