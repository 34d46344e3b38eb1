from __future__ import annotations

from tests.integration.world import DEPLOY, World


def test_ci_exchange_works(world: World) -> None:
    response = world.exchange(world.ci_token(), audience=DEPLOY)
    assert response.status_code == 200, response.json
    print(response.json)
