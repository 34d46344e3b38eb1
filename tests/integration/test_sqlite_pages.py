"""A new SQLite database gets 1 KiB pages (sts.db.engine.SQLITE_PAGE_SIZE): a commit writes
each page it changed whole to the WAL. One created with another page size keeps it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from sts.db.engine import SQLITE_PAGE_SIZE, make_engine
from sts.db.models import IssuedToken
from sts.settings import Settings
from tests.conftest import FixedClock
from tests.integration.test_sqlite_checkpoints import world_on_sqlite
from tests.integration.world import DEPLOY

MakeSettings = Callable[..., Settings]


def page_size_and_journal(path: Path) -> tuple[int, str]:
    with sqlite3.connect(path) as connection:
        page = connection.execute("PRAGMA page_size").fetchone()[0]
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    return int(page), str(journal)


def test_a_new_database_gets_small_pages_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()
    assert SQLITE_PAGE_SIZE == 1024
    assert page_size_and_journal(path) == (1024, "wal")


def test_a_database_created_with_other_pages_keeps_them_and_serves(
    tmp_path: Path, make_settings: MakeSettings, clock: FixedClock
) -> None:
    path = tmp_path / "sts.db"
    with sqlite3.connect(path) as connection:  # as an earlier sts (or sqlite3's default) made it
        connection.execute("PRAGMA page_size=4096")
        connection.execute("CREATE TABLE placeholder (id INTEGER PRIMARY KEY)")
    assert page_size_and_journal(path) == (4096, "delete")
    with world_on_sqlite(path, make_settings, clock, interval=3600) as world:
        response = world.exchange(world.ci_token(), audience=DEPLOY)
        assert response.status_code == 200
        assert world.count(IssuedToken) == 1
    assert page_size_and_journal(path) == (4096, "wal")
