import pytest

from tests.integration.world import VAULT, World, world

__all__ = ["world"]


@pytest.fixture
def workload_reads_secrets_with_ci_tokens(world: World) -> None:
    world.put_rule(
        "workload-from-ci",
        {
            "subject_token": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
            "clients": ["workload"],
            "allow": {"audiences": [VAULT], "scopes": ["secrets:read"], "max_ttl": 60},
        },
    )
