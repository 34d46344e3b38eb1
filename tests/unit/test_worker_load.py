"""sts.cli.worker_load: granian workers spread keep-alive connections by load. The board is
real shared memory; the clock is the test's, advanced by the app while a request is
inside it, so every busy fraction below is exact."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from sts.cli.worker_load import (
    STALE,
    WINDOW,
    SpreadConnectionsByLoad,
    WorkerBoard,
    should_shed,
    spread_by_load,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_each_worker_claims_its_own_slot_and_a_dead_workers_slot_is_reused() -> None:
    board = WorkerBoard(2)
    assert board.claim(os.getpid()) == 0
    assert board.claim(dead_pid()) == 1
    assert board.claim(os.getpid()) == 0  # the same worker claiming again keeps its slot
    assert board.claim(os.getppid()) == 1  # slot 1's owner is dead: reused
    assert board.claim(12345678) is None  # both owners alive: this one does not take part


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A live process other than this one and pid 1 (this process's parent may be pid 1
    itself, when whoever started the tests has exited)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_the_least_busy_other_worker_is_judged_by_its_last_window(live_pid: int) -> None:
    board = WorkerBoard(3)
    mine, other, third = (board.claim(pid) for pid in (os.getpid(), live_pid, 1))
    assert (mine, other, third) == (0, 1, 2)
    board.publish(other, 0.9, now=100.0)
    board.publish(third, 0.4, now=100.0)
    assert board.least_busy_other(mine, now=100.5) == 0.4
    board.publish(third, 0.95, now=100.5)
    assert board.least_busy_other(mine, now=100.5) == 0.9
    # Not counted: the worker itself.
    board.publish(mine, 0.0, now=100.5)
    assert board.least_busy_other(mine, now=100.5) == 0.9


def test_a_worker_silent_for_a_while_counts_as_idle_unless_a_request_is_stuck_inside() -> None:
    board = WorkerBoard(2)
    mine, other = board.claim(os.getpid()), board.claim(os.getppid())
    assert mine is not None and other is not None
    board.publish(other, 0.9, now=100.0)
    later = 100.0 + STALE + 0.1
    assert board.least_busy_other(mine, now=later) == 0.0  # no request finished: idle
    board.set_inside(other, 2)
    assert board.least_busy_other(mine, now=later) == 1.0  # stuck: never shed towards it


def test_a_dead_or_absent_worker_is_no_target() -> None:
    board = WorkerBoard(3)
    mine = board.claim(os.getpid())
    assert mine is not None
    assert board.least_busy_other(mine, now=100.0) is None  # the other slots are free
    dead = board.claim(dead_pid())
    assert dead is not None
    board.publish(dead, 0.0, now=100.0)
    assert board.least_busy_other(mine, now=100.0 + STALE + 0.1) is None


@pytest.mark.parametrize(
    ("mine", "least_other", "shed"),
    [
        (1.0, 0.0, True),
        (0.8, 0.5, True),
        (1.0, 0.75, False),  # about as busy: keep the connection
        (0.7, 0.0, False),  # this worker has room itself
        (1.0, None, False),  # no other worker
    ],
)
def test_a_worker_sheds_only_when_it_is_busy_and_another_is_markedly_less(
    mine: float, least_other: float | None, shed: bool
) -> None:
    assert should_shed(mine, least_other) is shed


def saturated_worker(
    other_busy: float, threads: int = 1, headers: dict[str, str] | None = None
) -> tuple[Any, Clock, SpreadConnectionsByLoad, WorkerBoard]:
    """A worker whose every request holds its one thread for 0.1 s of the test's clock,
    back to back (busy 1.0), beside another live worker last seen ``other_busy``."""
    clock = Clock()
    app = Flask(__name__)

    def work() -> Any:
        clock.now += 0.1
        return "ok", 200, headers or {}

    app.add_url_rule("/", "work", work)
    board = WorkerBoard(2)
    mine, other = board.claim(os.getpid()), board.claim(os.getppid())
    assert mine is not None and other is not None
    spread = SpreadConnectionsByLoad(app.wsgi_app, board, mine, threads=threads, clock=clock)
    board.publish(other, other_busy, now=clock.now)
    app.wsgi_app = spread  # type: ignore[method-assign]
    return app.test_client(), clock, spread, board


def connection_headers(client: Any, requests: int) -> list[list[str]]:
    return [client.get("/").headers.getlist("Connection") for _ in range(requests)]


def test_a_saturated_worker_closes_one_connection_per_window_while_another_idles() -> None:
    client, _clock, spread, _board = saturated_worker(other_busy=0.0)
    # Requests 1-3 fill the first window (0.3 s >= WINDOW); the 4th announces the close;
    # the next window ends at the 6th, so the 7th closes again.
    assert WINDOW == 0.25
    seen = connection_headers(client, 8)
    assert seen == [[], [], [], ["close"], [], [], ["close"], []]
    assert spread.shed == 2


def test_workers_about_as_busy_keep_their_connections() -> None:
    client, _clock, spread, _board = saturated_worker(other_busy=0.9)
    assert connection_headers(client, 12) == [[]] * 12
    assert spread.shed == 0


def test_a_worker_with_idle_threads_keeps_its_connections() -> None:
    """Two threads, one request at a time: half of the thread time is idle (0.5 < BUSY)."""
    client, _clock, spread, _board = saturated_worker(other_busy=0.0, threads=2)
    assert connection_headers(client, 12) == [[]] * 12
    assert spread.shed == 0


def test_the_busy_fraction_is_published_for_the_other_workers() -> None:
    client, clock, spread, board = saturated_worker(other_busy=0.0, threads=2)
    connection_headers(client, 3)
    other = 1 - spread.slot
    assert board.least_busy_other(other, now=clock.now) == pytest.approx(0.5)


def test_the_apps_own_connection_header_is_not_repeated() -> None:
    client, _clock, spread, _board = saturated_worker(
        other_busy=0.0, headers={"Connection": "close"}
    )
    assert connection_headers(client, 5) == [["close"]] * 5
    assert spread.shed == 1


def test_a_worker_takes_part_only_with_a_slot_of_its_own() -> None:
    app = Flask(__name__).wsgi_app
    board = WorkerBoard(1)
    spread = spread_by_load(app, board, threads=2)
    assert isinstance(spread, SpreadConnectionsByLoad)
    assert spread.slot == 0
    full = WorkerBoard(1)
    assert full.claim(os.getppid()) == 0
    assert spread_by_load(app, full, threads=2) is app  # served as it is
