"""Trusted issuers' public keys: inline JWKS, or fetched from ``jwks_uri`` and cached.

* Fetched with a timeout and a size cap; only https (or http on loopback, for tests).
* Cached for ``issuer_jwks_cache_ttl``; an unknown ``kid`` triggers at most one re-fetch
  per ``issuer_jwks_min_refresh`` (so a flood of junk kids cannot hammer the issuer).
* If a refresh fails, the last good key set keeps serving; with none at all the exchange
  answers ``temporarily_unavailable``.
* A key a token points to (``jku``, ``x5u``, ``jwk``) is never fetched or used.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sts.errors import TemporarilyUnavailable
from sts.trust import IssuerConfig

log = logging.getLogger(__name__)
MAX_JWKS_BYTES = 256 * 1024

Fetcher = Callable[[str, float], Mapping[str, Any]]


def fetch_jwks(url: str, timeout: float) -> Mapping[str, Any]:
    parts = urlsplit(url)
    if parts.scheme != "https" and not _is_loopback_http(parts.scheme, parts.hostname):
        raise ValueError("jwks_uri must use https")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (checked)
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    return document


def _is_loopback_http(scheme: str, host: str | None) -> bool:
    if scheme != "http" or host is None:
        return False
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_public_key_set(document: Mapping[str, Any]) -> KeySet:
    """Import only public asymmetric keys: an ``oct`` key or a private key in an issuer's
    JWKS is a misconfiguration we refuse to trust."""
    keys = [
        k
        for k in document.get("keys", [])
        if isinstance(k, dict) and k.get("kty") in ("EC", "RSA", "OKP") and "d" not in k
    ]
    return KeySet.import_key_set({"keys": keys})


@dataclass
class _Entry:
    keys: KeySet
    fetched_at: float


class IssuerKeyCache:
    def __init__(
        self,
        *,
        timeout: float,
        cache_ttl: float,
        min_refresh: float,
        fetcher: Fetcher = fetch_jwks,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._min_refresh = min_refresh
        self._fetcher = fetcher
        self.monotonic = monotonic  # injectable: tests move it instead of sleeping
        self._entries: dict[str, _Entry] = {}
        self._attempted: dict[str, float] = {}
        # Per issuer: the inline JWKS mapping its keys were imported from, and the keys.
        self._inline: dict[int, tuple[Mapping[str, Any], KeySet]] = {}
        self._lock = threading.Lock()

    def key_set(self, issuer: IssuerConfig, kid: str | None) -> KeySet:
        if issuer.jwks is not None:
            return self._inline_key_set(issuer.id, issuer.jwks)
        if issuer.jwks_uri is None:
            raise TemporarilyUnavailable("The issuer has no keys configured.")
        now = self.monotonic()
        entry = self._entries.get(issuer.jwks_uri)
        stale = entry is None or now - entry.fetched_at > self._cache_ttl
        unknown_kid = entry is not None and kid is not None and not _has_kid(entry.keys, kid)
        if stale or unknown_kid:
            entry = self._refresh(issuer.jwks_uri, now, force=stale) or entry
        if entry is None:
            raise TemporarilyUnavailable(
                "The subject token's issuer keys cannot be fetched; retry later.",
                reason="issuer.jwks_unavailable",
            )
        return entry.keys

    def _inline_key_set(self, issuer_id: int, jwks: Mapping[str, Any]) -> KeySet:
        """Imported once per trust configuration. Each load of the configuration reads the
        JWKS into a new mapping and never changes it afterwards, so the mapping's identity
        says whether the cached keys are still the issuer's: no per-exchange serialisation
        of the JWKS to compare contents, and one entry per issuer however often the keys
        change (the entry holds the mapping, so its identity cannot be reused)."""
        cached = self._inline.get(issuer_id)
        if cached is None or cached[0] is not jwks:
            cached = self._inline[issuer_id] = (jwks, import_public_key_set(jwks))
        return cached[1]

    def _refresh(self, uri: str, now: float, *, force: bool) -> _Entry | None:
        with self._lock:
            last = self._attempted.get(uri)
            entry = self._entries.get(uri)
            if (
                last is not None
                and now - last < self._min_refresh
                and (entry is not None or not force)
            ):
                # Refreshed (or tried) too recently: what that attempt left, which is the
                # fresh entry when another thread fetched while this one waited for the lock.
                return entry
            self._attempted[uri] = now
            try:
                keys = import_public_key_set(self._fetcher(uri, self._timeout))
            except (OSError, ValueError, JoseError) as exc:
                log.warning("fetching JWKS from %s failed: %s", uri, type(exc).__name__)
                return None
            entry = _Entry(keys, now)
            self._entries[uri] = entry
            return entry


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)
