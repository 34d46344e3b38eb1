"""bench.procfs.postgres_backends: the CPU column of a PostgreSQL run counts the backends
serving the bench's database, and nothing else that names it."""

from __future__ import annotations

import subprocess
import sys

import psycopg
from sqlalchemy.engine import make_url

from bench.procfs import postgres_backends


def test_the_backends_of_a_database_and_not_a_client_naming_it(postgres_server_url: str) -> None:
    url = make_url(postgres_server_url)
    database = url.database or ""
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        # A process whose command line names the database, as ``psql -d <database>`` would.
        client = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(30)", "-d", database]
        )
        try:
            found = postgres_backends(database)
        finally:
            client.kill()
            client.wait()
    assert backend[0] in found
    assert client.pid not in found
    assert postgres_backends(database + "_none") == []
