"""SQLite WAL checkpoints run in a background thread, never inside an exchange's commit
(sts.db.checkpoint). SQLite only: PostgreSQL's checkpoints are the server's business."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from sts.app import create_app
from sts.db.checkpoint import SAFETY_NET_PAGES, WalCheckpointer
from sts.db.locks import sqlite_write_gate
from sts.settings import Settings
from tests.conftest import FixedClock
from tests.integration.world import DEPLOY, World, seed_world
from tests.issuer import TestIssuer

MakeSettings = Callable[..., Settings]
SQLITE_DEFAULT_AUTOCHECKPOINT = 1000  # frames: where a plain connection checkpoints
WAL_HEADER, FRAME_HEADER = 32, 24


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "sts.db"


@contextmanager
def world_on_sqlite(
    path: Path, make_settings: MakeSettings, clock: FixedClock, interval: float
) -> Iterator[World]:
    settings = make_settings(f"sqlite:///{path}", sqlite_checkpoint_interval=interval)
    app: Flask = create_app(settings, clock=clock)
    ci, agents = TestIssuer("https://ci.issuer.test"), TestIssuer("https://agents.issuer.test")
    try:
        with ci.serve():
            yield seed_world(app, clock, ci, agents)
    finally:
        app.extensions["sts"].engine.dispose()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def wal_frames(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        page = int(connection.execute("PRAGMA page_size").fetchone()[0])
    return (wal_of(path).stat().st_size - WAL_HEADER) // (FRAME_HEADER + page)


def test_an_exchange_never_checkpoints_in_its_commit(
    sqlite_path: Path, make_settings: MakeSettings, clock: FixedClock
) -> None:
    # The background thread waits an hour: anything that reaches the database file during
    # this test was copied by a commit on the request path.
    with world_on_sqlite(sqlite_path, make_settings, clock, interval=3600) as world:
        assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
        before = digest(sqlite_path)
        for _ in range(100):
            assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
        # Past SQLite's default threshold: a default connection would have checkpointed.
        assert SQLITE_DEFAULT_AUTOCHECKPOINT < wal_frames(sqlite_path) < SAFETY_NET_PAGES
        assert digest(sqlite_path) == before


def test_the_background_thread_copies_the_wal_into_the_database(
    sqlite_path: Path, make_settings: MakeSettings, clock: FixedClock
) -> None:
    with world_on_sqlite(sqlite_path, make_settings, clock, interval=0.05) as world:
        checkpointer = world.app.extensions["sts"].exchange_store.checkpointer
        assert checkpointer is not None
        before = digest(sqlite_path)
        for _ in range(20):
            assert world.exchange(world.ci_token(), audience=DEPLOY).status_code == 200
        deadline = time.monotonic() + 5
        while digest(sqlite_path) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert digest(sqlite_path) != before
        assert checkpointer.runs > 0
        thread = checkpointer._thread
        assert thread is not None and thread.is_alive()
    # The engine's end (dispose) stops the thread.
    thread.join(timeout=5)
    assert not thread.is_alive()


def wal_salt(path: Path) -> bytes:
    """The WAL header's salts: SQLite draws new ones each time the WAL starts over."""
    with open(str(path) + "-wal", "rb") as wal:
        return wal.read(24)[16:24]


def test_a_long_wal_is_checkpointed_again_behind_the_write_gate(tmp_path: Path) -> None:
    """Step 2: a checkpoint beside the writers ends behind the frames they commit
    meanwhile, and SQLite starts the WAL over only after a checkpoint that reached its
    end; so once the WAL is past ``restart_pages`` the checkpoint runs again with the
    writers held back. Driven step by step (no timing): the test holds the gate, as a
    writer would, and sees which checkpoint waits for it."""
    path = tmp_path / "a.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the checkpointer checkpoints
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)")
    gate = sqlite_write_gate(str(path))
    checkpointer = WalCheckpointer(str(path), 3600, gate, restart_pages=64)
    connection = sqlite3.connect(path, timeout=0, check_same_thread=False)

    def commit(count: int) -> None:
        for _ in range(count):
            gate.acquire()
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t (blob) VALUES (?)", (bytes(6000),))
                writer.execute("COMMIT")
            finally:
                gate.release()

    def checkpoint_while_a_writer_holds_the_gate() -> bool:
        """Did the checkpoint have to wait for the gate?"""
        gate.acquire()
        round_ = threading.Thread(target=checkpointer.checkpoint, args=(connection,))
        try:
            round_.start()
            round_.join(0.5)
            waited = round_.is_alive()
        finally:
            gate.release()
        round_.join(5)
        assert not round_.is_alive()
        return waited

    try:
        commit(10)  # ~30 pages: step 1 only, beside the writer
        assert checkpoint_while_a_writer_holds_the_gate() is False
        commit(30)  # ~120 pages: past restart_pages
        assert checkpoint_while_a_writer_holds_the_gate() is True
        assert checkpointer.runs == 2
        before = wal_salt(path)
        commit(1)
        assert wal_salt(path) != before  # fully checkpointed: the next writer started over
    finally:
        connection.close()
        writer.close()
