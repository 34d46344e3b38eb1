"""An identity's revocation in passes ahead of its block (``sts revoke --subject`` and the
other identities, sts.revocation.sweep_ahead), on SQLite and PostgreSQL: the passes revoke
the identity's live tokens with their lineage, a pass at a time, without holding every
exchange back; the transaction that blocks the identity, which every exchange waits for,
then walks only from what the passes did not revoke (what was exchanged meanwhile, and
tokens revoked earlier by other means), and nothing live is left."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.exc import DBAPIError
from werkzeug.test import TestResponse

from sts import revocation
from sts.db.locks import write_transaction
from sts.db.models import IssuedToken
from sts.revocation import revoke_by_operator, sweep_ahead
from tests.integration.test_offboarding import claim, operator_audit, sts
from tests.integration.world import CI_SUBJECT, DEPLOY, PROJECT, World, lineage_row

HELD = 0.5  # seconds an exchange is watched waiting


def ci_tokens(world: World, count: int) -> list[str]:
    """``count`` sts tokens of the CI subject, each exchanged from its own CI JWT: roots."""
    tokens = []
    for _ in range(count):
        response = world.exchange(world.ci_token(), audience=DEPLOY)
        assert response.status_code == 200, response.json
        tokens.append(response.json["access_token"])  # type: ignore[index]
    return tokens


def passes_of(monkeypatch: pytest.MonkeyPatch, tokens: int) -> None:
    """Passes of ``tokens`` tokens, on either database."""
    monkeypatch.setattr(revocation, "ROOTS_PER_PASS", tokens)
    monkeypatch.setattr(revocation, "SQLITE_ROOTS_PER_PASS", tokens)


def live_jtis(world: World) -> set[str]:
    table = IssuedToken.__table__
    live = select(table.c.jti).where(table.c.revoked_at.is_(None))
    with world.app.extensions["sts"].engine.connect() as connection:
        return set(connection.execute(live).scalars())


def test_passes_revoke_a_batch_of_tokens_each_then_the_block_is_stored(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes_of(monkeypatch, 2)
    roots = ci_tokens(world, 5)

    result = sts(world, "revoke", "--subject", CI_SUBJECT, "--reason", "offboarded")

    assert result.exit_code == 0, result.output
    assert "revoked 5 token(s)" in result.output
    assert not any(world.is_active(token) for token in roots)
    audit = operator_audit(world)
    assert [row["reason"] for row in audit] == [
        "operator.revoke.subject.ahead",
        "operator.revoke.subject.ahead",
        "operator.revoke.subject.ahead",
        "operator.revoke.subject",
    ]
    assert [row["detail"].split(": ")[1] for row in audit[:3]] == [
        "revoked 2 token(s) ahead of the block",
        "revoked 2 token(s) ahead of the block",
        "revoked 1 token(s) ahead of the block",
    ]
    assert "revoked 5 token(s) (5 of them ahead of the block); blocked" in audit[3]["detail"]
    refused = world.exchange(world.ci_token(), audience=DEPLOY)
    assert refused.status_code == 400
    assert world.audit_rows()[-1]["reason"] == "blocked.subject"


def test_a_pass_revokes_the_lineage_of_each_token_it_names(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass revokes what was derived from the tokens it names, whoever holds it: here a
    token exchanged from the subject's token by someone else, and one minted with that
    one as the actor token. The pass names one token and revokes three."""
    passes_of(monkeypatch, 1)
    now = world.clock()
    rows = [
        lineage_row("root", now, subject=CI_SUBJECT),
        lineage_row("child", now, subject="someone-else", parent_jti="root"),
        lineage_row("acted", now, subject="a-third", actor_parent_jti="child"),
    ]
    with world.app.extensions["sts"].engine.begin() as connection:
        connection.execute(insert(IssuedToken.__table__), rows)

    result = sts(world, "revoke", "--subject", CI_SUBJECT)

    assert result.exit_code == 0, result.output
    ahead, final = operator_audit(world)
    assert "revoked 3 token(s) ahead of the block" in ahead["detail"]
    assert "revoked 3 token(s) (3 of them ahead of the block)" in final["detail"]
    assert live_jtis(world) == set()


def test_pages_are_read_past_the_last_jti_and_cut_into_passes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of three tokens, passes of two: 3 + 2 tokens read, passes of 2, 1 and 2. Each
    page is read past the last jti of the one before: a token the first page read that
    is still live (here, one put back between the pages) is not read again."""
    passes_of(monkeypatch, 2)
    monkeypatch.setattr(revocation, "ROOTS_PER_READ", 3)
    roots = ci_tokens(world, 5)
    services = world.app.extensions["sts"]
    now = services.clock()
    passes = revocation.sweep_passes(
        services.session_factory, "subject", CI_SUBJECT, reason="x", now=now
    )
    assert [next(passes), next(passes)] == [2, 1]
    table = IssuedToken.__table__
    first = min(claim(token, "jti") for token in roots)  # on the first page
    with world.app.extensions["sts"].engine.begin() as connection:
        connection.execute(update(table).where(table.c.jti == first).values(revoked_at=None))
    assert list(passes) == [2]
    assert live_jtis(world) == {first}


def test_the_passes_end_at_a_short_page(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page shorter than a page holds is the last: the tokens issued after it was read
    (here, with the tests' fixed clock, at the very time of the command) are left to the
    transaction under the lock, not chased page after page."""
    passes_of(monkeypatch, 2)
    monkeypatch.setattr(revocation, "ROOTS_PER_READ", 2)
    ci_tokens(world, 1)
    services = world.app.extensions["sts"]
    now = services.clock()
    passes = revocation.sweep_passes(
        services.session_factory, "subject", CI_SUBJECT, reason="x", now=now
    )
    assert next(passes) == 1
    later = ci_tokens(world, 1)  # issued at ``now`` too: a pass would read it
    assert list(passes) == []
    assert world.is_active(later[0])


def test_what_is_exchanged_after_the_passes_is_revoked_under_the_lock(world: World) -> None:
    before = ci_tokens(world, 2)
    services = world.app.extensions["sts"]
    now = services.clock()
    swept = sweep_ahead(services.session_factory, "subject", CI_SUBJECT, reason="x", now=now)
    assert swept == 2
    # Not blocked yet: the identity is still served between the passes and the block.
    meanwhile = ci_tokens(world, 1) + world.chain()
    assert all(world.is_active(token) for token in meanwhile)

    with write_transaction(services.session_factory) as session:
        outcome = revoke_by_operator(
            session, "subject", CI_SUBJECT, reason="x", now=now, swept=swept
        )

    assert outcome.revoked == 2 + 4
    assert outcome.blocked
    assert not any(world.is_active(token) for token in before + meanwhile)
    assert live_jtis(world) == set()


def test_a_token_revoked_earlier_is_still_walked_for_live_tokens_below_it(
    world: World,
) -> None:
    """The lock's walk skips only what the passes revoked (at this revocation's time). A
    token revoked earlier by other means, with a live token below it (a database from
    before a key's compromise revoked the lineage too), is walked as before: its live
    descendant, of another subject, is revoked."""
    now = world.clock()
    rows = [
        lineage_row("old-root", now - timedelta(minutes=1), subject=CI_SUBJECT),
        lineage_row("old-child", now, subject="someone-else", parent_jti="old-root"),
    ]
    table = IssuedToken.__table__
    engine = world.app.extensions["sts"].engine
    with engine.begin() as connection:
        connection.execute(insert(table), rows)
        connection.execute(
            update(table)
            .where(table.c.jti == "old-root")
            .values(revoked_at=now - timedelta(seconds=30))
        )
    tokens = ci_tokens(world, 1)

    result = sts(world, "revoke", "--subject", CI_SUBJECT)

    assert result.exit_code == 0, result.output
    assert "revoked 2 token(s)" in result.output  # the sts token (ahead), old-child (after)
    assert not world.is_active(tokens[0])
    assert live_jtis(world) == set()


def test_an_unknown_identity_is_refused_before_any_pass(world: World) -> None:
    tokens = ci_tokens(world, 1)
    result = sts(world, "revoke", "--credential", "no-such-credential")
    assert result.exit_code != 0
    assert "no service credential named 'no-such-credential'" in result.output
    assert world.is_active(tokens[0])
    assert operator_audit(world) == []


def test_a_rule_or_a_jti_is_revoked_in_one_transaction(world: World) -> None:
    """Only identities are swept ahead: a jti or a rule leaves no block to wait for."""
    tokens = ci_tokens(world, 1)
    result = sts(world, "revoke", "--jti", claim(tokens[0], "jti"))
    assert result.exit_code == 0, result.output
    assert [row["reason"] for row in operator_audit(world)] == ["operator.revoke.jti"]


def agent_exchange_in_thread(world: World) -> tuple[threading.Thread, list[TestResponse]]:
    """An exchange of another identity (an agent's API key and actor token), in a thread."""
    answers: list[TestResponse] = []
    actor_token = world.agent_token()

    def run() -> None:
        answers.append(world.agent_exchange(actor_token, audience=PROJECT))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def test_exchanges_of_other_identities_go_on_during_a_pass_on_postgresql(
    world: World,
) -> None:
    """While a pass revokes (its UPDATE about to run), an exchange of another identity is
    served at once on PostgreSQL: a pass holds only the rows it revokes. On SQLite a pass
    is a write transaction like any other, which the exchange waits for (a pass is
    bounded: ROOTS_PER_PASS tokens). While the block's transaction holds the governance
    lock, every exchange waits on either database."""
    ci_tokens(world, 2)
    services = world.app.extensions["sts"]
    engine = services.engine
    postgres = engine.dialect.name == "postgresql"
    stage = {"now": "pass"}
    waiting: dict[str, bool] = {}  # stage -> the exchange was still waiting
    threads: list[tuple[threading.Thread, list[TestResponse]]] = []

    def during_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if stage["now"] in waiting or "UPDATE issued_tokens" not in statement:
            return
        thread, answers = agent_exchange_in_thread(world)
        thread.join(timeout=30 if postgres and stage["now"] == "pass" else HELD)
        waiting[stage["now"]] = thread.is_alive()
        threads.append((thread, answers))

    now = services.clock()
    event.listen(engine, "before_cursor_execute", during_update)
    try:
        swept = sweep_ahead(services.session_factory, "subject", CI_SUBJECT, reason="x", now=now)
        stage["now"] = "block"
        with write_transaction(services.session_factory) as session:
            revoke_by_operator(session, "subject", CI_SUBJECT, reason="x", now=now, swept=swept)
    finally:
        event.remove(engine, "before_cursor_execute", during_update)
        for thread, _answers in threads:
            thread.join(timeout=30)

    assert swept == 2
    assert waiting == {"pass": not postgres, "block": True}
    assert [answers[0].status_code for _thread, answers in threads] == [200, 200]
    assert live_jtis(world) == {
        claim(answers[0].json["access_token"], "jti")  # type: ignore[index]
        for _thread, answers in threads
    }


def test_a_token_exchanged_from_one_a_pass_is_revoking_is_revoked_by_that_pass_on_postgresql(
    world: World,
) -> None:
    """The race a pass closes without the governance lock (PostgreSQL; on SQLite a pass
    and an exchange never interleave): an exchange holds the subject's token (FOR SHARE,
    as a re-exchange does) and records a token of another subject exchanged from it,
    while a pass starts. The pass waits for that exchange's commit, walks again, and
    revokes the new token with the rest."""
    if world.app.extensions["sts"].engine.dialect.name != "postgresql":
        pytest.skip("on SQLite a pass and an exchange are serialised by the write lock")
    parent = ci_tokens(world, 1)[0]
    parent_jti = claim(parent, "jti")
    services = world.app.extensions["sts"]
    now = world.clock()
    swept: list[int] = []
    with services.exchange_store.write() as exchange:
        exchange.hold_governance_shared()
        assert exchange.parent_revocation_state(parent_jti) == (True, False)
        exchange.record_issued_token(
            lineage_row("racing-child", now, parent_jti=parent_jti, subject="someone-else")
        )
        thread = threading.Thread(
            target=lambda: swept.append(
                sweep_ahead(services.session_factory, "subject", CI_SUBJECT, reason="x", now=now)
            )
        )
        thread.start()
        thread.join(timeout=HELD)
        assert thread.is_alive()  # the pass waits for the exchange's row lock
        exchange.commit()
    thread.join(timeout=30)

    assert swept == [2]  # the parent and the child exchanged from it meanwhile
    assert live_jtis(world) == set()


@pytest.mark.parametrize("first", [0, 1])
def test_a_pass_that_fails_leaves_the_revocation_to_the_lock_on_postgresql(
    world: World, first: int
) -> None:
    """An exchange presenting two of the identity's tokens (subject and actor) locks one,
    then the other; a pass locks them in its own order: the two can deadlock, and
    PostgreSQL aborts one of them. A failed pass ends the passes; the transaction under
    the lock then revokes what they left, and stores the block."""
    if world.app.extensions["sts"].engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises a pass and an exchange with its write lock")
    jtis = [claim(token, "jti") for token in ci_tokens(world, 2)]
    held, then = jtis[first], jtis[1 - first]
    services = world.app.extensions["sts"]
    now = world.clock()
    swept: list[int] = []
    exchange_failed: list[str] = []
    with services.exchange_store.write() as exchange:
        exchange.hold_governance_shared()
        assert exchange.parent_revocation_state(held) == (True, False)
        thread = threading.Thread(
            target=lambda: swept.append(
                sweep_ahead(services.session_factory, "subject", CI_SUBJECT, reason="x", now=now)
            )
        )
        thread.start()
        thread.join(timeout=HELD)
        assert thread.is_alive()
        try:
            exchange.parent_revocation_state(then)  # the actor token, as it were
            exchange.commit()
        except DBAPIError as exc:  # the deadlock's other party
            exchange_failed.append(type(exc.orig).__name__)
    thread.join(timeout=30)
    assert len(swept) == 1  # the passes returned, failed or not

    with write_transaction(services.session_factory) as session:
        outcome = revoke_by_operator(
            session, "subject", CI_SUBJECT, reason="x", now=now, swept=swept[0]
        )

    assert outcome.revoked == 2
    assert outcome.blocked
    assert live_jtis(world) == set()
    assert exchange_failed in ([], ["DeadlockDetected"])
