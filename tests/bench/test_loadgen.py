"""The bench's own plumbing (no server processes, no timing assertions): the raw HTTP/1.1
client against a canned local socket server, the request builder, /proc readers and the
profile's step attribution."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench import procfs
from bench.loadgen import Client, build_request, is_success, percentile
from bench.profile import categorize

OK_BODY = b'{"access_token":"x"}'
RESPONSES = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + OK_BODY,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'6\r\n{"acce\r\ne\r\nss_token":"x"}\r\n0\r\n\r\n',
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 20\r\n\r\n" + OK_BODY,
    "eof": b"HTTP/1.0 200 OK\r\n\r\n" + OK_BODY,
}


@contextmanager
def canned_server(kind: str) -> Iterator[tuple[int, list[int]]]:
    """Answers every request on a connection with RESPONSES[kind]; counts connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.settimeout(2)
                while True:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    conn.sendall(RESPONSES[kind])
                    if kind in ("close", "eof"):
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(3)
        listener.close()


@pytest.mark.parametrize(
    ("kind", "connections"),
    [("length", 1), ("chunked", 1), ("close", 3), ("eof", 3)],
    ids=["content-length keeps alive", "chunked", "connection-close", "close-delimited"],
)
def test_client_reads_every_body_framing(kind: str, connections: int) -> None:
    with canned_server(kind) as (port, accepted):
        client = Client(port, timeout=2)
        request = build_request(port, "/token", [("a", "b")])
        for _ in range(3):
            status, body = client.request(request)
            assert (status, body) == (200, OK_BODY)
        client.close()
    assert len(accepted) == connections == client.connects


def test_build_request_is_a_complete_form_post_with_basic_auth() -> None:
    raw = build_request(8080, "/token", [("scope", "a b"), ("x", "=&")], ("id", "secret"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert body == b"scope=a+b&x=%3D%26"
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"Authorization: Basic aWQ6c2VjcmV0" in head


def test_success_needs_200_and_an_access_token() -> None:
    assert is_success(200, OK_BODY)
    assert not is_success(400, OK_BODY)
    assert not is_success(200, b'{"error":"invalid_request"}')


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )


def test_procfs_reads_this_process() -> None:
    assert os.getpid() in procfs.tree(os.getppid())
    assert procfs.tree_cpu_seconds(os.getpid()) > 0
    assert procfs.tree_rss_kib(os.getpid())["master"] > 0
    assert procfs.machine_busy_seconds() > 0


@pytest.mark.parametrize(
    ("path", "function", "inherited", "expected"),
    [
        ("/x/sqlalchemy/orm/session.py", "commit", "sign", "database"),
        ("/x/sts/tokens/mint.py", "mint_access_token", "framework", "sign"),
        ("/x/joserfc/jws.py", "serialize_compact", "sign", "sign"),
        ("/x/sts/tokens/verify.py", "verify_jwt", "framework", "verify"),
        ("/x/flask/app.py", "dispatch_request", "framework", "framework"),
    ],
    ids=["db wins anywhere", "step", "inherits", "verify", "framework"],
)
def test_profile_attribution(path: str, function: str, inherited: str, expected: str) -> None:
    assert categorize(path, function, inherited) == expected
