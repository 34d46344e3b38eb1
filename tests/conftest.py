"""Shared fixtures. Storage tests run once per backend: SQLite (file, WAL) and PostgreSQL.

PostgreSQL: each pytest run creates its own database (``sts_test_<pid>``) on the server
named by ``STS_TEST_POSTGRES_URL`` (default: 127.0.0.1:5432, user postgres, trust auth)
and drops it at the end, so parallel runs never share state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sts.settings import Settings

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_PASSPHRASE = "correct horse battery staple"
# Key files at scrypt's lowest accepted cost (32 MiB, ~0.08 s a file instead of 128 MiB
# and ~0.3 s): every test app writes or loads one. Also for the `sts` processes and CLI
# runs tests start, which read the environment.
TEST_SCRYPT_LOG2_N = 15
os.environ.setdefault("STS_KEY_FILE_SCRYPT_LOG2_N", str(TEST_SCRYPT_LOG2_N))
TEST_ISSUER = "https://sts.test"


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    admin_url = os.environ.get("STS_TEST_POSTGRES_URL", DEFAULT_PG)
    name = f"sts_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, say so loudly
        pytest.fail(f"PostgreSQL is required for the storage tests ({admin_url}): {exc}")
    yield str(make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def reset_postgres(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each backend (no tables, no alembic_version)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sts.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    reset_postgres(url)
    return url


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def make_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    def _make(database_url: str | None, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "issuer": TEST_ISSUER,
            "database_url": database_url,
            "instance_dir": tmp_path / "instance",
            "keys_dir": tmp_path / "keys",
            "key_passphrase": TEST_PASSPHRASE,
            "key_file_scrypt_log2_n": TEST_SCRYPT_LOG2_N,
            "auto_migrate": True,
        }
        values.update(overrides)
        return Settings(**values).replace()  # type: ignore[arg-type]

    return _make


@pytest.fixture
def app(empty_database_url: str, make_settings, clock: FixedClock):  # type: ignore[no-untyped-def]
    """A fully wired app on a fresh database of each backend, with a fixed clock."""
    from sts.app import create_app

    application = create_app(make_settings(empty_database_url), clock=clock)
    yield application
    application.extensions["sts"].engine.dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()
