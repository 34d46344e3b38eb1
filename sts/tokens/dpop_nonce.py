"""Server-provided DPoP nonces (RFC 9449 §8), stateless and I/O-free.

With nonces on, a proof is accepted only if its ``nonce`` claim is one this service handed
out recently: a proof cannot be made ahead of time, whatever its ``iat`` says, which
limits what a moment's access to a client's signing key (not the key itself) is worth
(§11.2), and the freshness no longer rests on the client's clock alone.

A nonce is a time window's number with an HMAC of it under a secret every instance of the
service shares (``STS_DPOP_NONCE_SECRET``): any worker or replica accepts a nonce another
one handed out, with nothing stored or shared at run time. A nonce is accepted in its own
window and the next, so it lives between one and two ``STS_DPOP_NONCE_LIFETIME``s; a
caller sent ``use_dpop_nonce`` gets the current one in the ``DPoP-Nonce`` header (§8),
and every token response to a request with a proof carries it too (§8.2).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from datetime import datetime

from sts.settings import MIN_NONCE_SECRET_CHARS

# RFC 9449 §8.1: nonce = 1*NQCHAR. Base64url is within it.
WINDOW_BYTES = 8
MAC_BYTES = 16  # 128 bits: a forged nonce is a guess of those
_CONTEXT = b"sts dpop nonce v1"


class DpopNonces:
    """Hands out the nonces of one shared secret, and recognises them and, while a new
    secret rolls out, those of the previous one (``previous``): replicas still on the old
    secret hand out nonces that the new ones must accept, and the other way round, so a
    rotation sends no caller a round of ``use_dpop_nonce``."""

    def __init__(self, secret: str, lifetime: int, previous: str | None = None) -> None:
        for value in (secret, previous):
            if value is not None and len(value) < MIN_NONCE_SECRET_CHARS:
                raise ValueError(f"the secret must be at least {MIN_NONCE_SECRET_CHARS} characters")
        if lifetime < 1:
            raise ValueError("the lifetime must be at least 1 second")
        self._key = secret.encode()
        self.lifetime = lifetime
        # One nonce per window: computed once, not on every response.
        self._nonce_for = functools.lru_cache(maxsize=4)(self._make)
        self._previous = DpopNonces(previous, lifetime) if previous is not None else None

    def current(self, now: datetime) -> str:
        """The nonce to hand out at ``now``."""
        return self._nonce_for(self._window(now))

    def accepts(self, nonce: object, now: datetime) -> bool:
        """Whether ``nonce`` is, character for character, one handed out in this window
        or the previous one (RFC 9449 §4.3 check 10: it matches the server's)."""
        if not isinstance(nonce, str) or not nonce.isascii():  # compare_digest: ASCII only
            return False
        window = self._window(now)
        # Compared in constant time: the MAC is the only secret part of a nonce.
        if any(hmac.compare_digest(nonce, self._nonce_for(w)) for w in (window, window - 1)):
            return True
        return self._previous is not None and self._previous.accepts(nonce, now)

    def _window(self, now: datetime) -> int:
        return int(now.timestamp()) // self.lifetime

    def _make(self, window: int) -> str:
        raw = window.to_bytes(WINDOW_BYTES, "big") + self._mac(window)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _mac(self, window: int) -> bytes:
        message = _CONTEXT + window.to_bytes(WINDOW_BYTES, "big")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]
