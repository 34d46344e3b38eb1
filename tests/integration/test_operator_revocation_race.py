"""An operator revoking an identity (``sts revoke --subject|--client|...``, offboarding), a
leaked upstream token (``sts exposure --revoke``, exposure reports) or a service
credential (``POST /revoke``, exposure reports) while an exchange for it is in
flight, on real concurrency: whichever transaction commits first, no live token of the
identity is left once the revocation has committed, and later exchanges are refused.

The operator's transaction is held open on a second connection (as ``sts revoke`` runs
it: ``write_transaction``); the exchange runs in a thread, over HTTP, or holds its own
transaction open on the exchange store. On SQLite the write gate serialises the two; on
PostgreSQL the governance lock does (the exchange holds it shared, the revocation
exclusively: sts.db.locks.GOVERNANCE_LOCK).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from sts.audit import AuditEntry
from sts.db import queries
from sts.db.locks import GOVERNANCE_LOCK, begin_write, hold_exclusive, holds_exclusive
from sts.db.models import IssuedToken
from sts.revocation import OperatorOutcome, revoke_by_operator, revoke_credential, revoke_token
from tests.integration.test_dpop import make_proof
from tests.integration.world import CI_SUBJECT, DEPLOY, PROJECT, World, claims_of, lineage_row

HELD = 0.5  # seconds the second party is watched waiting for the first


def ci_exchange(world: World) -> TestResponse:
    return world.exchange(world.ci_token(), audience=DEPLOY)


def agent_exchange(world: World) -> TestResponse:
    return world.agent_exchange(world.agent_token(), audience=PROJECT)


LEAKED_JTI = "upstream-jti"  # as lineage_row records the subject token


def leaked_ci_exchange(world: World) -> TestResponse:
    """An exchange presenting the one CI token that leaked (the same jti every time)."""
    return world.exchange(world.ci_token(jti=LEAKED_JTI), audience=DEPLOY)


def leaked_actor_exchange(world: World) -> TestResponse:
    """An exchange presenting the one agent token that leaked, as the actor token."""
    return world.agent_exchange(world.agent_token(jti=LEAKED_JTI), audience=PROJECT)


DPOP_KEY = ECKey.generate_key("P-256")
LEAKED_JKT = DPOP_KEY.thumbprint()  # RFC 7638


def dpop_ci_exchange(world: World) -> TestResponse:
    """An exchange with a DPoP proof by the one DPoP key that leaked (RFC 9449)."""
    proof = make_proof(world, DPOP_KEY)
    return world.exchange(world.ci_token(), audience=DEPLOY, headers={"DPoP": proof})


# (kind, value named to sts revoke, an exchange that involves it)
IDENTITIES = [
    pytest.param("subject", CI_SUBJECT, ci_exchange, id="subject"),
    pytest.param("client", "ci-runner", ci_exchange, id="client"),
    pytest.param("issuer", "ci", ci_exchange, id="issuer"),
    pytest.param("credential", "agent-key", agent_exchange, id="credential"),
    pytest.param("actor", "agent-7", agent_exchange, id="actor"),
    pytest.param("upstream_token", LEAKED_JTI, leaked_ci_exchange, id="upstream_token"),
    pytest.param("upstream_token", LEAKED_JTI, leaked_actor_exchange, id="upstream_actor"),
    pytest.param("dpop_key", LEAKED_JKT, dpop_ci_exchange, id="dpop_key"),
]


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(target()), daemon=True)
    thread.start()
    return thread, outcome


@contextmanager
def open_write_transaction(world: World) -> Iterator[Session]:
    """A write transaction on a connection of its own, committed when the block ends (as
    ``sts revoke`` and ``POST /revoke`` run theirs), rolled back on an error."""
    with world.app.extensions["sts"].session_factory() as session:
        begin_write(session)
        yield session
        session.commit()


def live_tokens(world: World) -> int:
    """Issued tokens on record that are not revoked (the world starts with none)."""
    with world.app.extensions["sts"].session_factory() as session:
        count = session.scalar(
            select(func.count()).select_from(IssuedToken).where(IssuedToken.revoked_at.is_(None))
        )
        return int(count or 0)


def waits_then_is_refused(world: World, exchange: Callable[[World], TestResponse]) -> Any:
    """Run ``exchange`` in a thread while the caller's transaction is open: whether it was
    still waiting after HELD seconds. The caller commits, then calls the result for the
    response."""
    thread, outcome = in_thread(lambda: exchange(world))
    thread.join(HELD)
    waited = thread.is_alive()

    def response() -> TestResponse:
        thread.join(10)
        assert not thread.is_alive()
        result: TestResponse = outcome[0]
        return result

    return waited, response


@pytest.mark.parametrize(("kind", "value", "exchange"), IDENTITIES)
def test_an_exchange_during_an_operator_revocation_waits_then_is_refused(
    world: World, kind: str, value: str, exchange: Callable[[World], TestResponse]
) -> None:
    """The reviewer's scenario: the revocation's sweep and block are made, not committed;
    an exchange for the identity arrives."""
    assert exchange(world).status_code == 200  # one live token for the sweep to find
    with open_write_transaction(world) as operator:
        outcome = revoke_by_operator(operator, kind, value, reason="offboarded", now=world.clock())
        waited, response = waits_then_is_refused(world, exchange)

    refused = response()
    assert "access_token" not in refused.json, "a token was issued beside the block"
    assert refused.status_code == 400
    assert outcome == OperatorOutcome(revoked=1, blocked=True)
    assert live_tokens(world) == 0
    assert waited  # held back until the block was committed, then refused


def in_flight_exchange_row(world: World, jti: str) -> dict[str, Any]:
    """The lineage row of a CI exchange (subject CI_SUBJECT, client ci-runner)."""
    now = world.clock()
    with world.app.extensions["sts"].session_factory() as session:
        rule = queries.rule_by_name(session, "payments-prod-deploy")
        assert rule is not None
        rule_id, rule_version = rule.id, rule.version
    return lineage_row(
        jti,
        now,
        dpop_jkt=LEAKED_JKT,
        subject=CI_SUBJECT,
        subject_issuer=world.ci.issuer,
        rule_id=rule_id,
        rule_version=rule_version,
        kid=world.app.extensions["sts"].keyring.signing_key().kid,
    )


@pytest.mark.parametrize(
    ("kind", "value", "later"),
    [
        ("subject", CI_SUBJECT, leaked_ci_exchange),
        ("client", "ci-runner", leaked_ci_exchange),
        ("issuer", "ci", leaked_ci_exchange),
        ("upstream_token", LEAKED_JTI, leaked_ci_exchange),
        ("dpop_key", LEAKED_JKT, dpop_ci_exchange),
    ],
)
def test_an_operator_revocation_waits_for_an_exchange_in_flight_then_revokes_its_token(
    world: World, kind: str, value: str, later: Callable[[World], TestResponse]
) -> None:
    """The other order: the exchange has checked the blocks (none) and recorded its token,
    not yet committed, when the revocation begins."""
    services = world.app.extensions["sts"]
    identities = [
        ("subject", CI_SUBJECT),
        ("issuer", world.ci.issuer),
        ("client", "ci-runner"),
        ("upstream_token", LEAKED_JTI),
        ("dpop_key", LEAKED_JKT),
    ]
    row = in_flight_exchange_row(world, "in-flight")
    audit = AuditEntry(at=world.clock(), decision="allow", reason="granted", issued_jti="in-flight")
    with services.exchange_store.write() as exchange:
        exchange.hold_governance_shared()
        exchange.record_issued_token(row)
        exchange.record_audit(audit.values())
        assert exchange.active_blocks(identities) == []  # a round trip: all of it has run

        def revoke() -> OperatorOutcome:
            with open_write_transaction(world) as operator:
                return revoke_by_operator(operator, kind, value, reason="x", now=world.clock())

        thread, outcome = in_thread(revoke)
        thread.join(HELD)
        waited = thread.is_alive()
        exchange.commit()
    thread.join(10)

    assert outcome == [OperatorOutcome(revoked=1, blocked=True)]  # its token, swept
    assert live_tokens(world) == 0
    assert waited
    assert later(world).status_code == 400  # and the block holds


def test_an_exchange_during_the_revocation_of_its_credential_waits_then_is_refused(
    world: World,
) -> None:
    """``POST /revoke`` (or an exposure report) presenting a service credential disables it
    and revokes its tokens: an exchange presenting it meanwhile gets no token."""
    assert agent_exchange(world).status_code == 200
    with open_write_transaction(world) as revoker:
        credential = queries.credential_by_name(revoker, "agent-key")
        assert credential is not None
        assert revoke_credential(revoker, credential, world.clock()) == 1
        waited, response = waits_then_is_refused(world, agent_exchange)

    refused = response()
    assert "access_token" not in refused.json, "a token was issued from a disabled credential"
    assert refused.status_code == 400
    assert live_tokens(world) == 0
    assert waited


def test_a_credential_revocation_waits_for_an_exchange_in_flight_then_revokes_its_token(
    world: World,
) -> None:
    """The other order for a credential: the exchange presenting it has recorded its
    token, not yet committed, when ``POST /revoke`` (or an exposure report) disables it."""
    services = world.app.extensions["sts"]
    with services.session_factory() as session:
        credential = queries.credential_by_name(session, "agent-key")
        assert credential is not None
        credential_id = credential.id
    row = lineage_row(
        "in-flight",
        world.clock(),
        credential_id=credential_id,
        subject="team-alpha-automation",
        client_id="agent-runtime",
    )
    with services.exchange_store.write() as exchange:
        exchange.hold_governance_shared()
        exchange.record_issued_token(row)

        def revoke() -> int:
            with open_write_transaction(world) as revoker:
                disabled = queries.credential_by_name(revoker, "agent-key")
                assert disabled is not None
                return revoke_credential(revoker, disabled, world.clock())

        thread, outcome = in_thread(revoke)
        thread.join(HELD)
        waited = thread.is_alive()
        exchange.commit()
    thread.join(10)

    assert outcome == [1]  # the in-flight token, swept
    assert live_tokens(world) == 0
    assert waited
    assert "access_token" not in agent_exchange(world).json  # and the credential is disabled


def test_a_re_exchange_during_the_revocation_of_its_parent_waits_then_is_refused(
    world: World,
) -> None:
    """``POST /revoke`` / ``sts revoke --jti`` need no governance lock: the re-exchange
    reads its parent FOR SHARE, which waits for the revocation's FOR UPDATE, then sees the
    parent revoked (tests/integration/test_revocation_race.py: the other order)."""
    parent = ci_exchange(world).json["access_token"]
    with open_write_transaction(world) as revoker:
        assert revoke_token(revoker, claims_of(parent)["jti"], world.clock()) == 1
        waited, response = waits_then_is_refused(
            world, lambda world: world.workload_exchange(parent, audience=DEPLOY)
        )

    refused = response()
    assert "access_token" not in refused.json
    assert refused.status_code == 400
    assert live_tokens(world) == 0
    assert waited


def test_the_exclusive_hold_is_known_to_its_own_transaction_only(world: World) -> None:
    """An identity's sweep revokes in one statement only while its transaction holds the
    governance lock exclusively (no exchange can add to the lineage then); the mark must
    not outlive that transaction, or a later sweep in the same session would skip the row
    locks a revocation without the lock needs (queries.revoke_lineage)."""
    with world.app.extensions["sts"].session_factory() as session:
        begin_write(session)
        assert not holds_exclusive(session, GOVERNANCE_LOCK)
        hold_exclusive(session, GOVERNANCE_LOCK)
        assert holds_exclusive(session, GOVERNANCE_LOCK)
        assert not holds_exclusive(session, "another-lock")
        session.commit()
        begin_write(session)
        assert not holds_exclusive(session, GOVERNANCE_LOCK)
        session.rollback()


def test_the_exclusive_hold_is_refused_inside_a_savepoint(world: World) -> None:
    """Rolling back to a savepoint releases a PostgreSQL lock taken inside it, while the
    mark on the outer transaction would still say it is held."""
    with world.app.extensions["sts"].session_factory() as session:
        begin_write(session)
        with session.begin_nested(), pytest.raises(RuntimeError, match="savepoint"):
            hold_exclusive(session, GOVERNANCE_LOCK)
        assert not holds_exclusive(session, GOVERNANCE_LOCK)
        session.rollback()
