"""Trusted issuers' public keys: inline JWKS, or fetched from ``jwks_uri`` and cached.

* Fetched over https only (or http on loopback, for tests), never following a redirect,
  within a total deadline of ``issuer_jwks_timeout`` and a size cap.
* Cached for ``issuer_jwks_cache_ttl``; a stale set or an unknown ``kid`` triggers at most
  one fetch attempt per ``issuer_jwks_min_refresh`` and ``jwks_uri``, whether the last
  attempt succeeded or failed, so a flood of junk kids cannot hammer an issuer, nor a
  down one. Each ``jwks_uri`` has its own lock: a slow issuer holds up only the lookups of
  its own keys, and concurrent lookups share the one fetch in flight.
* If a refresh fails, whatever the error, the last good key set keeps serving, for at
  most ``issuer_jwks_max_stale``; with none (or past that) the exchange answers
  ``temporarily_unavailable``. A set the issuer does publish replaces it, even one
  without a usable key: that is how an issuer withdraws its keys.
* Keys that cannot be used are skipped one by one, not the whole set (RFC 7517 §5).
* A key a token points to (``jku``, ``x5u``, ``jwk``) is never fetched or used.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

from joserfc.jwk import JWKRegistry, KeySet

from sts.errors import TemporarilyUnavailable
from sts.trust import IssuerConfig

log = logging.getLogger(__name__)
MAX_JWKS_BYTES = 256 * 1024
READ_CHUNK_BYTES = 16 * 1024
# The curves of the signature algorithms sts accepts (verify.ASYMMETRIC_ALGORITHMS):
# ES256/ES384/ES512 (RFC 7518 §3.4) and EdDSA (RFC 8037 §3.1). Anything else (secp256k1,
# X25519, brainpool, a curve not yet registered) could never verify a token here.
SIGNING_CURVES = {"EC": ("P-256", "P-384", "P-521"), "OKP": ("Ed25519", "Ed448")}

Fetcher = Callable[[str, float], Mapping[str, Any]]


class RedirectRefused(Exception):
    """A ``jwks_uri`` answered with a redirect. Not followed: the target could be plain
    http (or ftp), which the https-only rule exists to refuse, and the key set must come
    from the URL the operator registered."""


class DeadlinePassed(TimeoutError):
    """A JWKS fetch took longer than its total deadline."""


def fetch_jwks(url: str, timeout: float) -> Mapping[str, Any]:
    """GET an issuer's JWKS: https only, no redirects, at most ``MAX_JWKS_BYTES``, and all
    of it (connecting, TLS, headers, body) within ``timeout`` seconds."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not _is_loopback_http(parts.scheme, parts.hostname):
        raise ValueError("jwks_uri must use https")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (checked)
    with _Deadline(timeout) as deadline:
        opener = urllib.request.build_opener(
            _RefuseRedirects, _HTTPHandler(deadline), _HTTPSHandler(deadline)
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                body = _read_capped(response, deadline)
        except Exception as exc:
            # Shut down at the deadline, the fetch fails with whatever the interrupted
            # read raised; say what happened instead.
            if deadline.expired:
                raise DeadlinePassed from exc
            raise
    return _parse_jwks(body)


def _read_capped(response: http.client.HTTPResponse, deadline: _Deadline) -> bytes:
    """The body, in chunks, until the end, the size cap or the deadline. A body cut short
    by the deadline's shutdown may still parse as JSON (a document padded with spaces),
    so an expired deadline fails the fetch whatever was read."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise ValueError("JWKS document too large")
        chunks.append(chunk)
    if deadline.expired:
        raise DeadlinePassed
    body = b"".join(chunks)
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) != len(body):
        # http.client returns a short read of a Content-Length body without complaint.
        raise ValueError("JWKS document truncated")
    return body


def _parse_jwks(body: bytes) -> Mapping[str, Any]:
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


class _Deadline:
    """A fetch's total time limit. The socket timeout bounds each read only: a server that
    sends a byte within each timeout holds the fetch (and every lookup waiting for it) as
    long as it likes. So at the deadline a timer shuts the connection down, wherever the
    fetch is (TLS handshake, headers, body): the blocked read returns at once. Resolving
    the host name is bounded too: the system resolver's own timeouts (5 s per attempt and
    name server by default, retried) would otherwise hold the fetch, and every exchange
    waiting on this issuer's keys, for up to half a minute; the lookup runs on a thread of
    its own that is left to finish alone if the deadline passes first."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        # Our own duplicates of the fetch's sockets: shutdown acts on the connection, not
        # the descriptor, and a duplicate stays open until __exit__, so the timer never
        # shuts down a descriptor the fetch closed and the system gave to someone else.
        self._sockets: list[socket.socket] = []
        self._finished = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        with self._lock:
            self._finished = True
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def connection(self, cls: type[http.client.HTTPConnection]) -> Any:
        """A factory for ``do_open``: ``cls`` connecting through :meth:`_connect`."""

        def make(host: str, /, **kwargs: Any) -> http.client.HTTPConnection:
            connection = cls(host, **kwargs)
            # http.client's hook for creating the TCP socket (an instance attribute since
            # Python 3.0): the one place that sees the socket before TLS wraps it.
            connection._create_connection = self._connect  # type: ignore[attr-defined]
            return connection

        return make

    def _connect(
        self,
        address: tuple[str, int],
        timeout: float,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        host, port = address
        error: OSError | None = None
        # As socket.create_connection, each address in turn, but from a bounded lookup.
        for family, kind, proto, _name, sockaddr in self._resolve(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(min(timeout, self._remaining()))
                if source_address is not None:
                    sock.bind(source_address)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            with self._lock:
                self._sockets.append(sock.dup())
                expired = self.expired
            if expired:
                sock.close()
                self._fail()
            return sock
        raise error if error is not None else OSError(f"no address for {host!r}")

    def _resolve(self, host: str, port: int) -> list[Any]:
        """``getaddrinfo`` within what is left of the deadline."""
        remaining = self._remaining()
        found: list[Any] = []
        failed: list[OSError] = []
        done = threading.Event()

        def look_up() -> None:
            try:
                found.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
            except OSError as exc:
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=look_up, name="sts-jwks-resolve", daemon=True).start()
        if not done.wait(remaining):
            self._fail()
        if failed:
            raise failed[0]
        return found

    def _remaining(self) -> float:
        remaining = self._ends - time.monotonic()
        if remaining <= 0:
            self._fail()
        return remaining

    def _fail(self) -> NoReturn:
        self.expired = True
        raise DeadlinePassed

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            for sock in self._sockets:
                with suppress(OSError):  # already closed by the peer
                    sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._deadline.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()  # http.client's default context: certificates and host checked
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._deadline.connection(http.client.HTTPSConnection), req)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> NoReturn:
        fp.close()
        raise RedirectRefused(f"{code} from a jwks_uri")


def import_public_key_set(document: Mapping[str, Any], source: str) -> KeySet:
    """The usable keys of a JWKS, imported one at a time. RFC 7517 §5: a key whose
    ``kty`` or ``crv`` is not understood is ignored, not the whole set; so are a key that
    does not import (a bad parameter, a point off its curve) and, as a misconfiguration
    we refuse to trust, an ``oct`` or a private key. ``source`` names the JWKS in the log,
    which says how many keys were skipped, never what they held."""
    candidates = document.get("keys")
    if not isinstance(candidates, list):
        candidates = []
    keys = [key for key in map(_import_public_key, candidates) if key is not None]
    if len(keys) < len(candidates):
        skipped = len(candidates) - len(keys)
        log.warning("JWKS of %s: %d of %d keys skipped", source, skipped, len(candidates))
    return KeySet(keys)


def import_every_public_key(document: Mapping[str, Any]) -> KeySet:
    """:func:`import_public_key_set`, strictly: a ValueError naming the first key the
    exchange would skip. An operator's own registration (an issuer's inline ``jwks``)
    should hold none: ``sts rules plan`` refuses one, ``sts check`` reports one."""
    candidates = document.get("keys")
    if not isinstance(candidates, list) or not candidates:
        raise ValueError("no keys")
    for index, candidate in enumerate(candidates):
        if _import_public_key(candidate) is None:
            if isinstance(candidate, dict) and _supported(candidate) and "d" not in candidate:
                JWKRegistry.import_key(candidate)  # raises what is wrong with it
            raise ValueError(f"keys[{index}] is not a public key sts can use (kty, crv)")
    return import_public_key_set(document, "a registered jwks")


def _supported(candidate: Mapping[str, Any]) -> bool:
    """A key type (and curve) sts verifies signatures with."""
    kty = candidate.get("kty")
    if kty == "RSA":
        return True
    curve = candidate.get("crv")
    return kty in SIGNING_CURVES and isinstance(curve, str) and curve in SIGNING_CURVES[kty]


def _import_public_key(candidate: object) -> Any:
    if not isinstance(candidate, dict) or "d" in candidate or not _supported(candidate):
        return None
    try:
        return JWKRegistry.import_key(candidate)
    except Exception:  # any failure to import: a key we cannot use
        return None


@dataclass
class _Entry:
    keys: KeySet
    fetched_at: float


@dataclass
class _Source:
    """One ``jwks_uri``: the last good keys, and the last fetch attempt, guarded by the
    URL's own lock (held for the fetch)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    entry: _Entry | None = None
    attempted_at: float | None = None
    attempts: int = 0  # finished attempts: a waiter that sees it move shares the result


class IssuerKeyCache:
    def __init__(
        self,
        *,
        timeout: float,
        cache_ttl: float,
        min_refresh: float,
        max_stale: float = 86400,
        fetcher: Fetcher = fetch_jwks,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._min_refresh = min_refresh
        self._max_stale = max_stale
        self._fetcher = fetcher
        self.monotonic = monotonic  # injectable: tests move it instead of sleeping
        self._sources: dict[str, _Source] = {}
        self._sources_lock = threading.Lock()
        # Per issuer: the inline JWKS mapping its keys were imported from, and the keys.
        self._inline: dict[int, tuple[Mapping[str, Any], KeySet]] = {}

    def key_set(self, issuer: IssuerConfig, kid: str | None) -> KeySet:
        if issuer.jwks is not None:
            return self._inline_key_set(issuer, issuer.jwks)
        if issuer.jwks_uri is None:
            raise TemporarilyUnavailable("The issuer has no keys configured.")
        source = self._source(issuer.jwks_uri)
        now = self.monotonic()
        entry = source.entry
        stale = entry is None or now - entry.fetched_at > self._cache_ttl
        unknown_kid = entry is not None and kid is not None and not _has_kid(entry.keys, kid)
        if stale or unknown_kid:
            entry = self._refresh(issuer.jwks_uri, source, now)
        if entry is None or now - entry.fetched_at > self._max_stale:
            # Fail closed past ``max_stale`` too: the last good keys serve while the issuer
            # cannot be reached, but not for ever. Whoever can keep sts from reaching the
            # issuer would otherwise keep a key the issuer has withdrawn (a leaked one)
            # verifying its tokens here.
            raise TemporarilyUnavailable(
                "The subject token's issuer keys cannot be fetched; retry later.",
                reason="issuer.jwks_unavailable",
            )
        return entry.keys

    def _inline_key_set(self, issuer: IssuerConfig, jwks: Mapping[str, Any]) -> KeySet:
        """Imported once per trust configuration. Each load of the configuration reads the
        JWKS into a new mapping and never changes it afterwards, so the mapping's identity
        says whether the cached keys are still the issuer's: no per-exchange serialisation
        of the JWKS to compare contents, and one entry per issuer however often the keys
        change (the entry holds the mapping, so its identity cannot be reused)."""
        cached = self._inline.get(issuer.id)
        if cached is None or cached[0] is not jwks:
            keys = import_public_key_set(jwks, f"issuer {issuer.name} (inline)")
            cached = self._inline[issuer.id] = (jwks, keys)
        return cached[1]

    def _source(self, uri: str) -> _Source:
        with self._sources_lock:
            return self._sources.setdefault(uri, _Source())

    def _refresh(self, uri: str, source: _Source, now: float) -> _Entry | None:
        """A new fetch unless one was attempted within ``min_refresh``, successful or not,
        also with nothing cached yet: an issuer that is down is not asked again for every
        token that names it. Returns what the last attempt left (None: no keys)."""
        seen = source.attempts
        with source.lock:
            if source.attempts != seen:
                return source.entry  # fetched while this thread waited: share its result
            last = source.attempted_at
            if last is not None and now - last < self._min_refresh:
                return source.entry
            source.attempted_at = now
            try:
                keys = self._fetch(uri)
            finally:
                source.attempts += 1
            if keys is not None:
                source.entry = _Entry(keys, now)
            return source.entry

    def _fetch(self, uri: str) -> KeySet | None:
        """The issuer's usable keys, or None when the fetch or the document fails in any
        way (a refused connection, a bad status line, JSON nested past the recursion
        limit, not a JWK set): the caller keeps the last good keys. The log names the
        error's type only, never a body the issuer sent.

        A JWK set the issuer did publish replaces the keys even when none of it is
        usable, ``{"keys": []}`` included: that is how an issuer withdraws its keys, and
        its tokens are then refused (fail closed), not verified with keys it took back."""
        try:
            keys = import_public_key_set(self._fetcher(uri, self._timeout), uri)
        except Exception as exc:  # whatever it is, the last good keys serve
            log.warning("fetching JWKS from %s failed: %s", uri, type(exc).__name__)
            return None
        if not keys.keys:
            log.warning("JWKS from %s holds no usable key: the issuer's tokens are refused", uri)
        return keys


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)
