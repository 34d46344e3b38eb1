"""The SQLite write gate's wait is bounded: a process that holds it and never lets go (a
command stopped inside its transaction, a hung one) costs writers a 503, not a hang.

Real processes and real ``flock``s: the holder is a separate Python process."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from sts.db.locks import SqliteWriteGate, sqlite_write_gate
from tests.integration.world import DEPLOY, World

ROOT = Path(__file__).resolve().parents[2]

# Takes the gate of argv[1] (and, with "transaction", SQLite's write lock, as any sts write
# transaction does), says so, and holds both until its stdin closes.
HOLDER = r"""
import sqlite3, sys
from sts.db.locks import sqlite_write_gate
sqlite_write_gate(sys.argv[1]).acquire()
if sys.argv[2] == "transaction":
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_by_another_process(database: str, what: str = "gate") -> Iterator[None]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database, what],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


def lock_is_free(path: str) -> bool:
    """Whether another open file description can take the flock now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def eventually(condition: object, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "gate.db")


def test_a_writer_gives_up_after_the_timeout_then_gets_the_gate_once_free(database: str) -> None:
    gate = SqliteWriteGate(database + ".writelock", timeout=0.3)
    with held_by_another_process(database):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            gate.acquire()
        assert 0.3 <= time.monotonic() - started < 2.0
    gate.acquire()  # free again: taken at once
    gate.release()


def test_an_abandoned_wait_does_not_keep_the_lock(database: str) -> None:
    """The waiter thread gets the lock after its writer gave up: it lets it go at once."""
    gate = SqliteWriteGate(database + ".writelock", timeout=0.2)
    with held_by_another_process(database), pytest.raises(OperationalError):
        gate.acquire()
    assert eventually(lambda: lock_is_free(database + ".writelock"))
    gate.acquire()
    assert not lock_is_free(database + ".writelock")
    gate.release()
    assert lock_is_free(database + ".writelock")


def test_a_writer_takes_over_a_wait_still_pending(database: str) -> None:
    gate = SqliteWriteGate(database + ".writelock", timeout=0.2)
    with held_by_another_process(database):
        with pytest.raises(OperationalError):
            gate.acquire()  # its wait stays pending in the waiter thread
        gate.timeout = 5.0
        started = time.monotonic()
        # The holder lets go when this block ends; acquire below waits for that.
    gate.acquire()
    assert time.monotonic() - started < 5.0
    assert not lock_is_free(database + ".writelock")
    gate.release()


def test_an_uncontended_gate_is_taken_without_the_waiter_thread(database: str) -> None:
    gate = SqliteWriteGate(database + ".writelock", timeout=0.2)
    for _ in range(3):
        gate.acquire()
        gate.release()
    assert gate._waiter is None


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_an_exchange_behind_a_stuck_writer_is_refused_then_served(
    world: World, empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The service's rule: the database unavailable -> 503 temporarily_unavailable, no
    token; and it recovers by itself (it hung for as long as the holder lived). The
    refusal waits once: its audit row is not attempted behind the same lock."""
    database = make_url(empty_database_url).database
    assert database
    gate = sqlite_write_gate(database)
    gate.timeout = 1.0
    assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
    rows = len(world.audit_rows())
    with held_by_another_process(database, "transaction"):
        started = time.monotonic()
        refused = world.exchange(world.ci_token(), audience=DEPLOY)
        waited = time.monotonic() - started
        assert refused.status_code == 503
        assert refused.json["error"] == "temporarily_unavailable"
        assert "access_token" not in refused.json
    assert 1.0 <= waited < 1.9  # one timeout, not the exchange's and then the refusal's
    assert "could not record refusal database.locked: the write lock is held" in caplog.text
    assert len(world.audit_rows()) == rows
    served = world.exchange(world.ci_token(), audience=DEPLOY)
    assert served.status_code == 200, served.json
