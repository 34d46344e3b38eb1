"""A re-exchange racing the revocation of its parent (PostgreSQL, real concurrency): the
new child must end up revoked too, whichever transaction commits first."""

from __future__ import annotations

import threading
import time

import pytest

from sts.db.models import IssuedToken
from sts.revocation import revoke_token
from tests.integration.test_exchange_scenarios import claims_of
from tests.integration.world import DEPLOY, World, lineage_row


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_child_committed_during_a_revocation_is_revoked(world: World) -> None:
    parent = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    parent_jti = claims_of(parent)["jti"]
    services = world.app.extensions["sts"]
    now = world.clock()

    # The exchange's transaction: parent checked (held FOR SHARE), child inserted, not yet
    # committed.
    exchange = services.exchange_store.write().__enter__()
    assert exchange.parent_revocation_state(parent_jti) == (True, False)
    exchange.record_issued_token(
        lineage_row(
            "racing-child",
            now,
            parent_jti=parent_jti,
            subject_token_id=parent_jti,
            client_id="workload",
            scope="",
        )
    )

    revoked: list[int] = []

    def revoke_parent() -> None:
        with services.session_factory() as session:
            revoked.append(revoke_token(session, parent_jti, now))
            session.commit()

    revoker = threading.Thread(target=revoke_parent)
    revoker.start()
    time.sleep(0.3)
    assert revoker.is_alive()  # waiting for the exchange's lock on the parent
    exchange.commit()
    exchange.__exit__(None, None, None)
    revoker.join(timeout=10)
    assert revoked == [2]
    with services.session_factory() as session:
        assert session.get(IssuedToken, "racing-child").revoked_at is not None
