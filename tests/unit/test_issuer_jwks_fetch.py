"""Fetching a trusted issuer's JWKS from its ``jwks_uri``, over real HTTP on 127.0.0.1 (a
fake issuer, not a mock): no redirects, a total deadline, a size cap; and the cache
around the fetch (at most one attempt per interval and URL, one lock per URL, the last
good keys kept through any failure)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import pytest

from sts.errors import TemporarilyUnavailable
from sts.tokens.issuer_keys import (
    MAX_JWKS_BYTES,
    DeadlinePassed,
    IssuerKeyCache,
    RedirectRefused,
    fetch_jwks,
)
from sts.trust import IssuerConfig
from tests.issuer import TestIssuer, serving
from tests.unit.test_issuer_keys import issuer as issuer_config

UNKNOWN_CURVE = {"kty": "EC", "crv": "BP-256", "x": "AA", "y": "AA", "kid": "bp"}


def http_response(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    head = f"HTTP/1.0 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


def config(jwks_uri: str, issuer_id: int = 1) -> IssuerConfig:
    return issuer_config(None, issuer_id, jwks_uri)


def cache(
    seconds: list[float], *, timeout: float = 2, min_refresh: float = 30, max_stale: float = 3600
) -> IssuerKeyCache:
    """The cache with the real fetcher, on a clock the test moves (``seconds[0]``)."""
    return IssuerKeyCache(
        timeout=timeout,
        cache_ttl=300,
        min_refresh=min_refresh,
        max_stale=max_stale,
        monotonic=lambda: seconds[0],
    )


def kids(keys: Any) -> set[str]:
    return {key.kid for key in keys.keys}


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_its_target_never_fetched(code: int) -> None:
    """The https-only rule holds for the URL the operator registered; a redirect could
    lead anywhere (plain http, ftp), so none is followed. The target here is a JWKS the
    fetch would accept if it were the registered URL."""
    target = TestIssuer()
    with target.serve() as target_url:

        class Redirect(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(code)
                self.send_header("Location", target_url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        with serving(Redirect) as base, pytest.raises(RedirectRefused):
            fetch_jwks(f"{base}/jwks", 2)
    assert target.fetches == 0


def trickling(part: str) -> type[BaseHTTPRequestHandler]:
    """A server that sends its headers, or only its body, a byte every 0.2 s: each read
    is well within the socket timeout, the whole takes over 6 s."""
    body = json.dumps({"keys": []}).encode() + b" " * 30

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            response = http_response(body)
            at_once, slowly = response[: len(response) - len(body)], response
            if part == "body":
                self.wfile.write(at_once)
                slowly = body
            try:
                for byte in slowly:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the fetch hung up: what the test wants

        def log_message(self, *args: Any) -> None:
            pass

    return Trickle


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_trickling_server_is_cut_off_at_the_total_deadline(part: str) -> None:
    with serving(trickling(part)) as base:
        started = time.monotonic()
        with pytest.raises(DeadlinePassed):
            fetch_jwks(f"{base}/jwks", 1.0)
        assert time.monotonic() - started < 1.5


def test_a_stuck_name_lookup_is_cut_off_at_the_total_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name server that does not answer holds ``getaddrinfo`` for the resolver's own
    timeouts (up to ~30 s); the fetch gives up at its deadline all the same. The stuck
    resolver is simulated (the test cannot make the system's stop answering): the lookup
    blocks until the test lets it go."""
    release = threading.Event()
    looked_up: list[str] = []

    def unanswered(host: str, *_args: Any, **_kwargs: Any) -> Any:
        looked_up.append(host)
        release.wait(30)
        raise OSError("no answer")

    issuer = TestIssuer()
    with issuer.serve() as url:
        port = urlsplit(url).port
        monkeypatch.setattr("socket.getaddrinfo", unanswered)
        started = time.monotonic()
        try:
            with pytest.raises(DeadlinePassed):
                fetch_jwks(f"http://localhost:{port}/jwks", 0.5)
            assert time.monotonic() - started < 1.0
        finally:
            release.set()
    assert looked_up == ["localhost"]
    assert issuer.fetches == 0


def test_a_host_name_is_looked_up_and_fetched_from() -> None:
    """The bounded lookup still resolves: ``localhost`` here, not an address."""
    issuer = TestIssuer()
    with issuer.serve() as url:
        port = urlsplit(url).port
        document = fetch_jwks(f"http://localhost:{port}/jwks", 2)
    assert document["keys"]
    assert issuer.fetches == 1


def test_a_body_shorter_than_its_content_length_is_refused() -> None:
    """A JWKS cut short may still be JSON (here: padding lost); it is not the document."""

    class Short(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"keys": []}).encode()
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body) + 10}\r\n\r\n"
            self.wfile.write(head.encode() + body)  # and hangs up, 10 bytes short

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Short) as base, pytest.raises(ValueError, match="truncated"):
        fetch_jwks(f"{base}/jwks", 2)


def test_a_document_past_the_size_cap_is_refused_without_a_content_length() -> None:
    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.wfile.write(b"HTTP/1.0 200 OK\r\n\r\n")  # the body ends when the server closes
            with suppress(OSError):
                self.wfile.write(b" " * (MAX_JWKS_BYTES + 1))

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Endless) as base, pytest.raises(ValueError, match="too large"):
        fetch_jwks(f"{base}/jwks", 2)


def test_a_down_issuer_is_asked_once_per_interval_even_with_nothing_cached() -> None:
    """Tokens naming a trusted issuer whose endpoint fails cost it one fetch per minimum
    refresh interval, not one each; meanwhile they are answered "keys unavailable"."""
    issuer = TestIssuer()
    issuer.response = http_response(b"", "503 Service Unavailable")
    seconds = [1000.0]
    keys = cache(seconds)
    with issuer.serve() as url:
        for _ in range(10):
            with pytest.raises(TemporarilyUnavailable):
                keys.key_set(config(url), "a-made-up-kid")
        assert issuer.fetches == 1
        seconds[0] += 29
        with pytest.raises(TemporarilyUnavailable):
            keys.key_set(config(url), issuer.kid)
        assert issuer.fetches == 1
        issuer.response = None  # the issuer is back, and the interval has passed
        seconds[0] += 1
        assert kids(keys.key_set(config(url), issuer.kid)) == {issuer.kid}
        assert issuer.fetches == 2


def held_jwks_server(
    issuer: TestIssuer, fails: bool
) -> tuple[type[BaseHTTPRequestHandler], threading.Event, threading.Event, list[str]]:
    """A JWKS endpoint that answers (the JWKS, or a 503) only once ``release`` is set;
    ``arrived`` is set when a fetch reaches it; ``fetches`` lists them."""
    arrived, release = threading.Event(), threading.Event()
    fetches: list[str] = []

    class Held(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(self.path)
            arrived.set()
            release.wait(10)
            if fails:
                self.wfile.write(http_response(b"", "503 Service Unavailable"))
            else:
                self.wfile.write(http_response(json.dumps(issuer.public_jwks()).encode()))

        def log_message(self, *args: Any) -> None:
            pass

    return Held, arrived, release, fetches


def in_thread(call: Callable[[], object], results: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(call())
        except TemporarilyUnavailable:
            results.append("unavailable")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_slow_issuer_does_not_hold_up_another_issuers_lookups() -> None:
    slow, healthy = TestIssuer("https://slow.example"), TestIssuer("https://healthy.example")
    handler, arrived, release, _ = held_jwks_server(slow, fails=True)
    keys = cache([1000.0], timeout=10)
    results: list[object] = []
    with serving(handler) as slow_base, healthy.serve() as healthy_url:
        stuck = in_thread(lambda: keys.key_set(config(f"{slow_base}/jwks", 1), None), [])
        assert arrived.wait(5)
        lookup = in_thread(lambda: kids(keys.key_set(config(healthy_url, 2), None)), results)
        lookup.join(2)
        answered_while_the_slow_fetch_was_on_the_wire = not lookup.is_alive()
        release.set()
        lookup.join()
        stuck.join()
    assert answered_while_the_slow_fetch_was_on_the_wire
    assert results == [{healthy.kid}]


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_concurrent_lookups_of_one_issuer_share_the_fetch_in_flight(fails: bool) -> None:
    """Lookups that wait for an issuer's fetch get its result, even with no minimum
    refresh interval: one fetch, whether it succeeds or fails."""
    issuer = TestIssuer()
    handler, arrived, release, fetches = held_jwks_server(issuer, fails)
    keys = cache([1000.0], min_refresh=0)
    results: list[object] = []
    with serving(handler) as base:
        url = f"{base}/jwks"
        threads = [in_thread(lambda: kids(keys.key_set(config(url), None)), results)]
        assert arrived.wait(5)
        threads += [
            in_thread(lambda: kids(keys.key_set(config(url), None)), results) for _ in range(3)
        ]
        time.sleep(0.2)  # the three wait for the first one's fetch
        release.set()
        for thread in threads:
            thread.join(10)
    assert len(fetches) == 1
    assert results == ["unavailable" if fails else {issuer.kid}] * 4


NESTED = b"[" * 200_000  # JSON nested past the parser's recursion limit


@pytest.mark.parametrize(
    ("response", "logged"),
    [
        (b"HTTP/1.1 abc\r\n\r\n", "BadStatusLine"),
        (b"\x00\x01 not http at all\r\n\r\n", "BadStatusLine"),
        (http_response(NESTED), "RecursionError"),
        (http_response(b"{}", "500 Internal Server Error"), "HTTPError"),
        (http_response(b"", "302 Found", "Location: http://127.0.0.1:9/\r\n"), "RedirectRefused"),
    ],
    ids=["bad-status-line", "not-http", "nested-json", "500", "redirect"],
)
def test_a_failed_refresh_of_any_kind_keeps_the_last_good_keys(
    response: bytes, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the refresh fails with, the exchange verifies with the keys it had (no
    500), and the log names the error's type, never what the issuer sent."""
    issuer = TestIssuer()
    seconds = [1000.0]
    keys = cache(seconds)
    with issuer.serve() as url:
        good = keys.key_set(config(url), issuer.kid)
        issuer.response = response
        seconds[0] += 301  # past the cache lifetime: a refresh, which fails
        with caplog.at_level(logging.WARNING, logger="sts.tokens.issuer_keys"):
            assert keys.key_set(config(url), issuer.kid) is good
    assert issuer.fetches == 2
    assert caplog.records[-1].getMessage() == f"fetching JWKS from {url} failed: {logged}"


@pytest.mark.parametrize("published", [[], [UNKNOWN_CURVE]], ids=["no-keys", "no-usable-key"])
def test_a_published_set_without_usable_keys_withdraws_the_old_ones(
    published: list[Any],
) -> None:
    """An issuer withdraws its keys by publishing a set without them: the keys it took
    back must not verify its tokens any longer (fail closed), as they would if that set
    counted as a failed refresh."""
    issuer = TestIssuer()
    seconds = [1000.0]
    keys = cache(seconds)
    with issuer.serve() as url:
        assert kids(keys.key_set(config(url), issuer.kid)) == {issuer.kid}
        issuer.response = http_response(json.dumps({"keys": published}).encode())
        seconds[0] += 301  # past the cache lifetime: a refresh
        assert kids(keys.key_set(config(url), issuer.kid)) == set()
    assert issuer.fetches == 2


def test_the_last_good_keys_serve_while_refreshing_fails_but_not_for_ever() -> None:
    """A failed refresh keeps the last good keys, up to ``max_stale`` after they were
    fetched; past it the issuer's tokens are refused (fail closed: whoever keeps sts from
    reaching the issuer must not keep a key it withdrew verifying here). Once the issuer
    answers again, its keys serve again."""
    issuer = TestIssuer()
    seconds = [1000.0]
    keys = cache(seconds, max_stale=3600)
    with issuer.serve() as url:
        good = keys.key_set(config(url), issuer.kid)
        issuer.response = http_response(b"{}", "500 Internal Server Error")
        seconds[0] += 3600  # stale and failing: still the last good keys
        assert keys.key_set(config(url), issuer.kid) is good
        seconds[0] += 301
        with pytest.raises(TemporarilyUnavailable):
            keys.key_set(config(url), issuer.kid)
        issuer.response = None
        seconds[0] += 31  # the next attempt, past min_refresh
        assert kids(keys.key_set(config(url), issuer.kid)) == {issuer.kid}
