"""Token Status List (draft-ietf-oauth-status-list): every issued token carries a status
entry; sts serves a signed status list token whose bits follow revocation.

The status list is verified here with PyJWT and decoded with this file's own reading of
the draft (ZLIB-compressed bytes; index 0 is the least significant bit of byte 0), not
with sts's code."""

from __future__ import annotations

import base64
import json
import threading
import zlib
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from sqlalchemy import select, update

from sts.db.models import IssuedToken, StatusList
from sts.status_list import allocate_token_status
from tests.conftest import TEST_ISSUER
from tests.integration.test_introspection import second_instance
from tests.integration.world import DEPLOY, World, claims_of


def status_of(token: str) -> tuple[str, int]:
    claims = pyjwt.decode(token, options={"verify_signature": False})
    entry = claims["status"]["status_list"]
    return entry["uri"], entry["idx"]


def fetch_status_list(client: Any, world: World, uri: str) -> dict[str, Any]:
    """GET the status list token and verify it against the published JWKS (PyJWT)."""
    assert uri.startswith(TEST_ISSUER)
    response = client.get(uri.removeprefix(TEST_ISSUER))
    assert response.status_code == 200
    assert response.mimetype == "application/statuslist+jwt"
    token = response.get_data(as_text=True)
    assert pyjwt.get_unverified_header(token)["typ"] == "statuslist+jwt"
    jwks = pyjwt.PyJWKSet.from_dict(client.get("/jwks.json").json)
    key = next(k for k in jwks.keys if k.key_id == pyjwt.get_unverified_header(token)["kid"])
    claims: dict[str, Any] = pyjwt.decode(
        token,
        key=key,
        algorithms=["ES256"],
        # The world runs on a fixed clock: exp is checked against it below, not wall time.
        options={"require": ["sub", "iat", "exp"], "verify_exp": False},
    )
    assert claims["iat"] <= world.now() < claims["exp"]
    assert claims["sub"] == uri
    assert claims["status_list"]["bits"] == 1
    claims["_cache_control"] = response.headers["Cache-Control"]
    return claims


def bit(status_list: dict[str, Any], idx: int) -> int:
    lst = status_list["lst"]
    raw = zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)))
    return (raw[idx // 8] >> (idx % 8)) & 1


def test_every_issued_token_points_at_its_own_entry(world: World) -> None:
    tokens = world.chain()
    entries = [status_of(token) for token in tokens]
    uris = {uri for uri, _ in entries}
    assert uris == {TEST_ISSUER + "/statuslists/1"}
    assert len({idx for _, idx in entries}) == 3


def test_revoking_the_root_sets_the_bits_of_the_whole_chain(world: World) -> None:
    bystander = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    tokens = world.chain()
    assert world.revoke(tokens[0]).status_code == 200

    uri, _ = status_of(tokens[0])
    claims = fetch_status_list(world.client, world, uri)

    assert [bit(claims["status_list"], status_of(t)[1]) for t in tokens] == [1, 1, 1]
    assert bit(claims["status_list"], status_of(bystander)[1]) == 0
    assert claims["ttl"] == world.app.extensions["sts"].settings.status_list_ttl
    assert claims["exp"] > claims["iat"]


def test_status_list_reaches_another_instance_within_its_cache_lifetime(world: World) -> None:
    tokens = world.chain()
    uri, idx = status_of(tokens[2])
    ttl = world.app.extensions["sts"].settings.status_list_ttl
    with second_instance(world) as other:
        replica = other.test_client()
        before = fetch_status_list(replica, world, uri)
        assert bit(before["status_list"], idx) == 0
        assert before["_cache_control"] == f"public, max-age={ttl}"

        assert world.revoke(tokens[0]).status_code == 200
        world.clock.advance(ttl // 2)
        cached = fetch_status_list(replica, world, uri)  # still the signed snapshot
        assert bit(cached["status_list"], idx) == 0
        assert cached["_cache_control"] == f"public, max-age={ttl - ttl // 2}"

        world.clock.advance(ttl - ttl // 2)
        after = fetch_status_list(replica, world, uri)
        assert bit(after["status_list"], idx) == 1


def test_a_child_of_a_revoked_token_is_marked_even_if_its_own_row_is_not(world: World) -> None:
    # As if the child were minted while its parent was being revoked (the lineage walk
    # could not see it): the published list agrees with introspection.
    tokens = world.chain()
    root = claims_of(tokens[0])["jti"]
    with world.app.extensions["sts"].session_factory() as session:
        session.execute(
            update(IssuedToken).where(IssuedToken.jti == root).values(revoked_at=world.clock())
        )
        session.commit()
    claims = fetch_status_list(world.client, world, status_of(tokens[0])[0])
    assert [bit(claims["status_list"], status_of(t)[1]) for t in tokens] == [1, 1, 1]


def test_unknown_status_list_is_404(world: World) -> None:
    response = world.client.get("/statuslists/999")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_metadata_and_aggregation_name_the_lists(world: World) -> None:
    tokens = world.chain()
    metadata = world.client.get("/.well-known/oauth-authorization-server").json
    assert metadata["revocation_endpoint"] == TEST_ISSUER + "/revoke"
    assert metadata["introspection_endpoint"] == TEST_ISSUER + "/introspect"
    aggregation = metadata["status_list_aggregation_endpoint"]
    listed = world.client.get(aggregation.removeprefix(TEST_ISSUER)).json
    assert listed == {"status_lists": [status_of(tokens[0])[0]]}


def test_a_full_list_is_never_written_again(world: World) -> None:
    services = world.app.extensions["sts"]
    with services.exchange_store.write() as transaction:
        allocated = [
            (s.list_id, s.idx)
            for s in (
                allocate_token_status(transaction, TEST_ISSUER, 8, world.clock()) for _ in "x" * 9
            )
        ]
        transaction.commit()
    assert allocated == [(1, i) for i in range(8)] + [(2, 0)]


def test_concurrent_allocations_never_collide(world: World) -> None:
    services = world.app.extensions["sts"]
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def allocate_some() -> None:
        try:
            for _ in range(5):
                with services.exchange_store.write() as transaction:
                    status = allocate_token_status(transaction, TEST_ISSUER, 64, world.clock())
                    transaction.commit()
                results.append((status.list_id, status.idx))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=allocate_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 20
    assert len(set(results)) == 20


def test_lineage_rows_record_the_status_entry(world: World) -> None:
    token = world.chain()[0]
    _, idx = status_of(token)
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["jti"]
    with world.app.extensions["sts"].session_factory() as session:
        row = session.scalars(select(IssuedToken).where(IssuedToken.jti == jti)).one()
    assert (row.status_list_id, row.status_idx) == (1, idx)


def counter_of(world: World, list_id: int) -> tuple[int, Any]:
    with world.app.extensions["sts"].session_factory() as session:
        row = session.get(StatusList, list_id)
        assert row is not None
        return row.next_idx, row.last_claim_at


def test_exchanges_take_indexes_from_a_claimed_block_not_the_counter(world: World) -> None:
    block = world.app.extensions["sts"].settings.status_index_block
    first = world.chain()
    assert counter_of(world, 1) == (block, world.clock())  # one block claimed, one claim time
    world.clock.advance(5)
    rest = world.chain() + world.chain()
    assert [status_of(token)[1] for token in first + rest] == list(range(9))
    assert counter_of(world, 1) == (block, world.clock() - timedelta(seconds=5))


def test_replicas_claim_disjoint_blocks(world: World) -> None:
    block = world.app.extensions["sts"].settings.status_index_block
    mine: list[str] = []
    theirs: list[str] = []
    with second_instance(world) as other:
        own_client = world.client
        for _ in range(3):  # interleaved: each replica keeps to its own block
            mine += world.chain()
            world.client = other.test_client()
            try:
                theirs += world.chain()
            finally:
                world.client = own_client
    assert sorted(status_of(token)[1] for token in mine) == list(range(9))
    assert sorted(status_of(token)[1] for token in theirs) == list(range(block, block + 9))
    assert counter_of(world, 1)[0] == 2 * block


def test_a_block_claimed_by_a_rolled_back_transaction_is_never_used(world: World) -> None:
    services = world.app.extensions["sts"]
    with services.exchange_store.write() as transaction:
        taken = allocate_token_status(transaction, TEST_ISSUER, 64, world.clock())
        # no commit: the claim is rolled back, and so is the block
    assert (taken.list_id, taken.idx) == (1, 0)
    with services.session_factory() as session:
        assert session.scalars(select(StatusList)).all() == []
    assert services.exchange_store.status_indexes.take() is None
    token = world.chain()[0]
    assert status_of(token)[1] == 0  # claimed afresh, from the counter the rollback restored


def test_a_block_is_not_used_after_its_maximum_age(world: World) -> None:
    services = world.app.extensions["sts"]
    pool = services.exchange_store.status_indexes
    block = services.settings.status_index_block
    ticks = [1000.0]
    pool.monotonic = lambda: ticks[0]  # the process clock the pool reads, driven here
    first = world.chain()
    ticks[0] += pool.max_age + 1  # the rest of block 0 is too old now: left unused
    second = world.chain()
    assert [status_of(token)[1] for token in first] == [0, 1, 2]
    assert [status_of(token)[1] for token in second] == [block, block + 1, block + 2]


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_a_lock_on_the_lists_row_does_not_hold_up_exchanges(world: World) -> None:
    """An exchange with a block of indexes in hand takes no lock on its list's row: no
    foreign-key check (FOR KEY SHARE, a WAL record and a MultiXact per exchange) waits on
    whoever holds it."""
    first = world.exchange(world.ci_token(), audience=DEPLOY)  # claims a block
    assert first.status_code == 200, first.json
    engine = world.app.extensions["sts"].engine
    answered: list[int] = []
    with engine.connect() as holder:
        holder.execute(select(StatusList.id).with_for_update())  # every list row, exclusively
        exchange = threading.Thread(
            target=lambda: answered.append(
                world.exchange(world.ci_token(), audience=DEPLOY).status_code
            )
        )
        exchange.start()
        exchange.join(timeout=10)
        finished_under_the_lock = not exchange.is_alive()
        holder.rollback()
    exchange.join()
    assert finished_under_the_lock
    assert answered == [200]


def test_a_list_signed_by_a_compromised_key_is_signed_again_at_once(world: World) -> None:
    """The cached list must not outlive its signing key: after a compromise the key is
    gone from the JWKS, so a list it signed could not be verified (and its bits predate
    the compromise's revocations)."""
    from sts.keys.keystore import make_keystore
    from sts.keys.lifecycle import compromise

    token = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    uri, idx = status_of(token)
    before = fetch_status_list(world.client, world, uri)  # cached now, for the whole ttl
    assert bit(before["status_list"], idx) == 0
    services = world.app.extensions["sts"]
    leaked = services.keyring.signing_key().kid

    compromise(
        services.session_factory,
        make_keystore(services.settings),
        services.settings.signing_alg,
        leaked,
        world.clock,
    )
    services.keyring.load()

    after = fetch_status_list(world.client, world, uri)  # verified against the new JWKS
    kid = pyjwt.get_unverified_header(world.client.get(uri.removeprefix(TEST_ISSUER)).data)["kid"]
    assert kid == services.keyring.signing_key().kid != leaked
    assert bit(after["status_list"], idx) == 1  # the compromise revoked the token
