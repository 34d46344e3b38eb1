"""Stopping the service (SIGTERM to the main process: `docker stop`, systemd, Kubernetes)
loses no exchange that a worker has already accepted: it is answered, and its lineage and
audit rows are on record. A real `sts serve` on 127.0.0.1, both servers, both databases."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from sts.db.engine import make_engine
from sts.db.migrate import alembic_config, upgrade
from tests.integration.world import claims_of
from tests.issuer import TestIssuer
from tests.rules.test_live_effect import (
    BASIC_AUTH,
    apply_rules,
    exchange_body,
    rules_document,
    rules_service_env,
)
from tests.server import server_process

pytestmark = pytest.mark.slow


def exchange_request(host: str, subject_token: str) -> tuple[bytes, bytes]:
    """A token-exchange request as raw HTTP/1.1: (head, body)."""
    body = exchange_body(subject_token)
    head = (
        f"POST /token HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Authorization: {BASIC_AUTH}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the body"
        body += chunk
    return int(head.split()[1]), json.loads(body[:length])


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_an_exchange_in_flight_when_the_service_is_stopped_is_answered_and_recorded(
    empty_database_url: str, tmp_path: Path, server: str
) -> None:
    env = rules_service_env(empty_database_url, tmp_path)
    engine = make_engine(empty_database_url)
    upgrade(alembic_config(engine), "schema@head")
    issuer = TestIssuer("https://ci.issuer.test")
    apply_rules(env, tmp_path / "rules.yaml", rules_document(issuer, "refs/heads/main"), "Main")
    token = issuer.mint(
        repository="acme/payments", ref="refs/heads/main", lifetime=300, aud="https://sts.test"
    )
    with server_process(env, args=("--server", server)) as (base, process):
        host_port = base.removeprefix("http://")
        host, port = host_port.split(":")
        head, body = exchange_request(host_port, token)
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            # The request is in flight: accepted, its body half sent, when the stop comes.
            sock.sendall(head + body[: len(body) // 2])
            time.sleep(0.5)
            os.kill(process.pid, signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[len(body) // 2 :])
            status, document = read_response(sock)
        assert process.wait(timeout=30) == 0  # then it stops, cleanly
    assert status == 200, document
    jti = claims_of(str(document["access_token"]))["jti"]
    with engine.connect() as connection:
        lineage = connection.execute(
            text("SELECT count(*) FROM issued_tokens WHERE jti = :jti"), {"jti": jti}
        ).scalar_one()
        audit = connection.execute(
            text("SELECT decision FROM audit_log WHERE issued_jti = :jti"), {"jti": jti}
        ).all()
    engine.dispose()
    assert lineage == 1
    assert [row.decision for row in audit] == ["allow"]
