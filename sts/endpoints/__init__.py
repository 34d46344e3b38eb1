"""One module per endpoint: plain data in, :class:`Response` out. No Flask here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# RFC 6749 §5.1: responses carrying tokens or credentials MUST NOT be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | None = None  # a body that is not JSON (e.g. a signed JWT); sent as is
