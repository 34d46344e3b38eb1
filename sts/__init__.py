"""sts: a security token service (RFC 8693 token exchange with downscoping rules)."""

from __future__ import annotations

__version__ = "0.1.0"
