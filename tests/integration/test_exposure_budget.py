"""The service-wide budget of exposure reports that take the governance lock (every
exchange waits while one runs): counted in Redis across replicas, per process without it.
Redis is the real one at 127.0.0.1:6379, each test under keys of its own."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

from flask import Flask
from werkzeug.test import TestResponse

from sts.app import create_app
from sts.ratelimit import REDIS_TIMEOUT, GlobalBudget
from tests.integration.test_exposure_report import shape
from tests.integration.world import DEPLOY, World

REDIS_URL = "redis://127.0.0.1:6379/0"
START = 1_800_000_020.0  # 20 s into a window of 60 s


@contextmanager
def replica(world: World, redis_url: str, limit: int, key: str) -> Iterator[Flask]:
    """Another sts instance on the world's database, its budget under ``key`` and on a
    wall clock the test moves (``budget.wall``)."""
    settings = world.app.extensions["sts"].settings.replace(
        redis_url=redis_url, exposure_global_limit=limit
    )
    app = create_app(settings, clock=world.clock)
    budget: GlobalBudget = app.extensions["sts_exposure_budget"]
    assert budget.redis is not None and budget.limit == limit
    budget.key = key
    budget.wall = lambda: START
    try:
        yield app
    finally:
        app.extensions["sts"].engine.dispose()


def report(app: Flask, token: str, address: str = "198.51.100.9") -> TestResponse:
    return app.test_client().post(
        "/exposure-reports",
        data=urlencode({"token": token}),
        content_type="application/x-www-form-urlencoded",
        environ_base={"REMOTE_ADDR": address},
    )


def blocked(world: World, token: str) -> bool:
    response = world.exchange(token, audience=DEPLOY)
    return response.status_code == 400 and response.json["error"] == "invalid_request"


def test_reports_that_take_the_lock_share_one_budget_across_replicas(world: World) -> None:
    key = f"sts-test:{uuid.uuid4().hex}"
    leaked = [world.ci_token() for _ in range(3)]
    with (
        replica(world, REDIS_URL, 2, key) as first,
        replica(world, REDIS_URL, 2, key) as second,
    ):
        assert report(first, leaked[0]).status_code == 202
        # Neither a token blocked already (answered without the lock) nor one that
        # names nothing uses the budget.
        assert report(second, leaked[0]).status_code == 202
        assert report(second, "not a token").status_code == 202
        assert report(second, leaked[1]).status_code == 202

        refused = report(first, leaked[2])
        assert refused.status_code == 429
        assert refused.json["error"] == "slow_down"
        assert refused.headers["Retry-After"] == "40"  # the window's end
        assert refused.headers["Cache-Control"] == "no-store"
        # While it is spent, every report gets the same answer: no oracle.
        assert shape(report(second, "not a token", "198.51.100.10")) == shape(refused)
        assert blocked(world, leaked[0]) and blocked(world, leaked[1])
        assert not blocked(world, leaked[2])  # refused before anything was done
        rows = [r for r in world.audit_rows() if r["event"] == "exposure_report"]
        assert [r["reason"] for r in rows][-2:] == ["exposure.over_budget"] * 2
        assert rows[-2]["decision"] == "deny"
        assert all(leaked[2] not in str(r) for r in rows)

        for app in (first, second):  # the next window
            app.extensions["sts_exposure_budget"].wall = lambda: START + 60
        assert report(second, world.ci_token(), "198.51.100.11").status_code == 202


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_redis_down_fails_open_to_a_budget_per_process(world: World) -> None:
    """Nothing listens at the Redis URL: reports are still taken (a leaked token can be
    reported), each process counting its own budget; no 500, no wait."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    with replica(world, url, 1, f"sts-test:{uuid.uuid4().hex}") as app:
        started = time.monotonic()
        assert report(app, world.ci_token()).status_code == 202
        assert report(app, world.ci_token()).status_code == 429
        assert time.monotonic() - started < 2


def test_a_redis_that_does_not_answer_holds_no_request_long(world: World) -> None:
    """Redis accepts the connection and never answers: the first report waits at most
    the timeout (per call), then the process counts on its own for a while without
    asking Redis again."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing is ever read
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with replica(world, url, 2, f"sts-test:{uuid.uuid4().hex}") as app:
            started = time.monotonic()
            assert report(app, world.ci_token()).status_code == 202
            assert time.monotonic() - started < 4 * REDIS_TIMEOUT + 1
            started = time.monotonic()
            assert report(app, world.ci_token()).status_code == 202
            assert report(app, world.ci_token()).status_code == 429
            assert time.monotonic() - started < 1.5  # Redis was not asked again


def test_a_credential_uses_the_budget_until_it_is_kept_out(world: World) -> None:
    """A leaked service credential takes the lock once (disabled and blocked); reported
    again, it is kept out already and uses nothing; an sts access token takes no
    governance lock and uses nothing either."""
    access_token = world.exchange(world.ci_token(), audience=DEPLOY).json["access_token"]
    with replica(world, REDIS_URL, 2, f"sts-test:{uuid.uuid4().hex}") as app:
        assert report(app, world.api_key).status_code == 202
        assert report(app, world.api_key).status_code == 202
        assert report(app, access_token).status_code == 202
        assert report(app, world.ci_token()).status_code == 202
        assert report(app, world.ci_token()).status_code == 429
    assert not world.is_active(access_token)
    reasons = [r["reason"] for r in world.audit_rows() if r["event"] == "exposure_report"]
    assert reasons == [
        "exposure.credential_disabled",
        "exposure.credential_disabled",
        "exposure.access_token_revoked",
        "exposure.upstream_token_blocked",
        "exposure.over_budget",
    ]


def test_readyz_reports_redis_without_leaving_service(world: World) -> None:
    """/readyz names Redis when it is configured: "ok", or what the limits do without it
    (counted per process); either way sts stays ready (200). Without STS_REDIS_URL there
    is nothing to report."""
    assert "redis" not in world.app.test_client().get("/readyz").json["checks"]
    for url, expected in (
        (REDIS_URL, "ok"),
        (f"redis://127.0.0.1:{closed_port()}/0", "unavailable: limits counted per process"),
    ):
        with replica(world, url, 5, f"sts-test:{uuid.uuid4().hex}") as app:
            response = app.test_client().get("/readyz")
            assert response.status_code == 200, response.json
            assert response.json["status"] == "ready"
            assert response.json["checks"]["redis"] == expected
