"""A new SQLite database, which holds the audit log, the lineage and (database keystore)
the encrypted signing keys, is readable by its owner only: its folder 0700, the file and
its -wal and -shm files 0600. An existing world-readable one is named in a warning."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from sts.db.engine import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_something(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()  # open while the engine holds a connection
        assert (mode(wal), mode(shm)) == (0o600, 0o600)
    finally:
        engine.dispose()


def test_a_new_database_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "sts.db"
    write_something(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    with path.open("rb") as handle:
        assert handle.read(16) == b"SQLite format 3\x00"  # a real database in the file


def test_an_existing_readable_database_is_kept_and_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sts.db"
    write_something(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="sts.db.engine"):
        engine = make_engine(f"sqlite:///{path}")
        engine.dispose()
    assert mode(path) == 0o644  # not changed behind the operator's back
    assert f"{path} is readable by others (mode 0644)" in caplog.text
