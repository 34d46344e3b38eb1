from pathlib import Path

import pytest

from tests.conftest import TEST_PASSPHRASE
from tests.integration.world import world

__all__ = ["world"]


@pytest.fixture
def env(empty_database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an ``sts`` command on an empty database of the run's kind."""
    return {
        "STS_ISSUER": "http://127.0.0.1:8080",
        "STS_DATABASE_URL": empty_database_url,
        "STS_KEYS_DIR": str(tmp_path / "keys"),
        "STS_INSTANCE_DIR": str(tmp_path / "instance"),
        "STS_KEY_PASSPHRASE": TEST_PASSPHRASE,
    }
