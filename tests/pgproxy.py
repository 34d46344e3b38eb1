"""A TCP proxy in front of the tests' PostgreSQL that can lose a connection at the worst
moment: around the COMMIT of an exchange's transaction.

It relays bytes both ways and reads PostgreSQL's wire protocol (frontend/backend protocol
v3, PostgreSQL docs §55.7: a type byte and a length, after the untyped startup message)
only to know where a client's batch ends (Sync, Flush or a simple Query) and which
statements it runs (Parse names a statement and gives its text, Bind runs one by name).
Client messages are held until their batch ends, then sent together, so the proxy can
decide per batch. Armed, it acts on the first batch that runs both an insert into
``issued_tokens`` and a COMMIT (an exchange's recording transaction):

* ``before``: the batch is dropped and both sockets closed: the server never sees the
  COMMIT and rolls the transaction back;
* ``after``: the batch is sent, the server's answers are read up to its ReadyForQuery
  (the COMMIT has run: committed) and discarded, then both sockets are closed: the client
  never learns the outcome (a lost acknowledgement).

Connect with ``sslmode=disable`` and ``gssencmode=disable`` (no encryption negotiation
before the startup message).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

BATCH_ENDS = {b"S", b"H", b"Q"}  # Sync, Flush, simple Query
SYNCS = {b"S", b"Q"}  # each answered by one ReadyForQuery


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed message: (type byte, whole message as sent)."""
    head = _read_exact(sock, 5)
    (length,) = struct.unpack("!I", head[1:])
    return head[:1], head + _read_exact(sock, length - 4)


def _c_strings(body: bytes, count: int) -> list[str]:
    return [part.decode(errors="replace") for part in body.split(b"\0", count)[:count]]


@dataclass
class _Connection:
    """One client's connection: its prepared statements' texts, by name."""

    statements: dict[str, str] = field(default_factory=dict)

    def runs(self, kind: bytes, message: bytes) -> str | None:
        """The text of the statement this message runs (Bind of a parsed statement, or a
        simple Query); records what Parse prepares."""
        body = message[5:]
        if kind == b"P":
            name, text = _c_strings(body, 2)
            self.statements[name] = text
        elif kind == b"B":
            _portal, name = _c_strings(body, 2)
            return self.statements.get(name, "")
        elif kind == b"Q":
            return _c_strings(body, 1)[0]
        return None


class _Link:
    """A client's socket, the server's, and the ReadyForQuery answers still to come."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.swallow = False  # the server's answers go nowhere from now on
        self.answered = threading.Event()  # set when no answer is still to come
        self._pending = 0
        self._lock = threading.Lock()

    def expect_answer(self) -> None:
        with self._lock:
            self._pending += 1
            self.answered.clear()

    def answer_came(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending <= 0:
                self.answered.set()


def _is_exchange_commit(texts: list[str]) -> bool:
    upper = [text.strip().upper() for text in texts]
    return "COMMIT" in upper and any("INSERT INTO ISSUED_TOKENS" in text for text in upper)


class PostgresProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.armed: str | None = None  # "before" | "after", for one batch
        self.fired = threading.Event()
        self.sockets: list[socket.socket] = []

    def arm(self, when: str) -> None:
        assert when in ("before", "after")
        with self.lock:
            self.armed = when
            self.fired.clear()

    def _take_trigger(self, texts: list[str]) -> str | None:
        with self.lock:
            if self.armed is None or not _is_exchange_commit(texts):
                return None
            when, self.armed = self.armed, None
            return when

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):  # relayed message by message: no Nagle delays
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, server]
            link = _Link(client, server)
            threading.Thread(target=self._to_client, args=(link,), daemon=True).start()
            threading.Thread(target=self._to_server, args=(link,), daemon=True).start()

    def _to_server(self, link: _Link) -> None:
        connection = _Connection()
        try:
            (length,) = struct.unpack("!I", _read_exact(link.client, 4))  # startup message
            link.server.sendall(struct.pack("!I", length) + _read_exact(link.client, length - 4))
            link.expect_answer()  # its ReadyForQuery
            batch: list[bytes] = []
            texts: list[str] = []  # what runs up to the next Sync or Query
            while True:
                kind, message = _read_message(link.client)
                batch.append(message)
                text = connection.runs(kind, message)
                if text is not None:
                    texts.append(text)
                if kind not in BATCH_ENDS and kind != b"X":
                    continue
                when = self._take_trigger(texts) if kind in SYNCS else None
                if when == "before":
                    self._cut(link)
                    return
                if when == "after":
                    link.swallow = True
                if kind in SYNCS:
                    link.expect_answer()
                link.server.sendall(b"".join(batch))
                if when == "after":
                    link.answered.wait(10)  # every answer up to this Sync's, discarded
                    self._cut(link)
                    return
                batch = []
                if kind in SYNCS:
                    texts = []
        except (ConnectionError, OSError):
            self._close(link.client, link.server)

    def _to_client(self, link: _Link) -> None:
        try:
            while True:
                kind, message = _read_message(link.server)
                if kind == b"Z":  # ReadyForQuery: everything up to one Sync has run
                    link.answer_came()
                if not link.swallow:
                    link.client.sendall(message)
        except (ConnectionError, OSError):
            self._close(link.client, link.server)

    def _cut(self, link: _Link) -> None:
        self._close(link.client, link.server)
        self.fired.set()

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._close(self.listener, *self.sockets)


@contextmanager
def postgres_proxy(host: str, port: int) -> Iterator[PostgresProxy]:
    proxy = PostgresProxy((host, port))
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
