from pathlib import Path

import pytest

from tests.integration.world import world
from tests.server import service_env

__all__ = ["world"]


@pytest.fixture
def env(empty_database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an ``sts`` command on an empty database of the run's kind."""
    return service_env(empty_database_url, tmp_path, issuer="http://127.0.0.1:8080")
