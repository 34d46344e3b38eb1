"""What revocation adds to the exchange's transaction: one query on ``revocations`` for
every identity involved, and one status index allocation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.integration.world import DEPLOY, PROJECT, World


@contextmanager
def statements(world: World) -> Iterator[list[str]]:
    engine = world.app.extensions["sts"].engine
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_one_revocations_query_per_exchange(world: World) -> None:
    world.exchange(world.ci_token(), audience=DEPLOY)  # warm the caches
    for exchange in (
        lambda: world.exchange(world.ci_token(), audience=DEPLOY),
        lambda: world.agent_exchange(world.agent_token(), audience=PROJECT),
    ):
        with statements(world) as seen:
            assert exchange().status_code == 200
        on_revocations = [s for s in seen if "FROM revocations" in s]
        assert len(on_revocations) == 1, on_revocations
        assert len([s for s in seen if "UPDATE status_lists" in s]) == 1
