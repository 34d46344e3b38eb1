"""SQLite WAL checkpoints run in a background thread, never inside an exchange's commit
(sts.db.checkpoint). SQLite only: PostgreSQL's checkpoints are the server's business."""

from __future__ import annotations

import hashlib
import sqlite3
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
PAGE = 4096
SQLITE_DEFAULT_AUTOCHECKPOINT = 1000  # pages: where a plain connection checkpoints


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
        assert wal_of(sqlite_path).stat().st_size > SQLITE_DEFAULT_AUTOCHECKPOINT * PAGE
        assert wal_of(sqlite_path).stat().st_size < SAFETY_NET_PAGES * PAGE
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


def write_while_checkpointing(path: Path, restart_pages: int) -> int:
    """400 commits of ~2 pages each through the write gate, as exchanges do, with the
    checkpoint thread running; returns the WAL file's size at the end."""
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)")
    setup.close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the thread checkpoints
    gate = sqlite_write_gate(str(path))
    checkpointer = WalCheckpointer(str(path), 0.01, gate, restart_pages=restart_pages)
    checkpointer.ensure_running()
    try:
        for i in range(400):
            gate.acquire()
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t VALUES (?, ?)", (i, bytes(6000)))
                writer.execute("COMMIT")
            finally:
                gate.release()
            time.sleep(0.001)
        assert checkpointer.runs > 0
        return wal_of(path).stat().st_size  # measured before the last close removes it
    finally:
        checkpointer.stop()
        writer.close()


def test_the_wal_starts_over_once_the_checkpoint_catches_up(tmp_path: Path) -> None:
    # Without step 2 (behind the write gate) a checkpoint running beside the writers never
    # reaches the WAL's end, so the next writer never starts the WAL over: it only grows.
    never_restarted = write_while_checkpointing(tmp_path / "a.db", restart_pages=10**9)
    restarted = write_while_checkpointing(tmp_path / "b.db", restart_pages=64)
    # (Measured: 77-91 pages against 524-957; the latter varies because a checkpoint now
    # and then finishes in a writer's pause and the WAL starts over by luck.)
    assert restarted * 3 < never_restarted
