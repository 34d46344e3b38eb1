"""granian keeps a keep-alive connection on the worker that accepted it; sts serve makes
its workers recycle connections, and shed them when busy beside an idle worker, so that
they spread again (a real server on 127.0.0.1)."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from bench.procfs import cpu_seconds
from sts.cli.serve import RecycleKeepAliveConnections
from tests.server import server_process, worker_pids


def test_every_nth_response_announces_that_the_connection_closes() -> None:
    app = Flask(__name__)
    app.add_url_rule("/", "plain", lambda: "ok")
    app.add_url_rule("/closing", "closing", lambda: ("ok", 200, {"Connection": "close"}))
    app.wsgi_app = RecycleKeepAliveConnections(app.wsgi_app, every=3)  # type: ignore[method-assign]
    client = app.test_client()
    seen = [client.get("/").headers.getlist("Connection") for _ in range(7)]
    assert seen == [[], [], ["close"], [], [], ["close"], []]
    for _ in range(4):  # the 8th to the 11th
        client.get("/")
    # the 12th: the app's own "close" is kept, not repeated
    assert client.get("/closing").headers.getlist("Connection") == ["close"]
    assert client.get("/").headers.getlist("Connection") == []


def test_recycling_every_zero_responses_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecycleKeepAliveConnections(Flask(__name__).wsgi_app, every=0)


def state_in(stat: Path) -> str:
    """The state letter of a /proc stat file (after the command name, which may hold
    spaces)."""
    return stat.read_text().rpartition(")")[2].split()[0]


def wait_until_stopped(pid: int) -> None:
    """SIGSTOP is asynchronous: wait until every thread of the process is stopped."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = {state_in(task / "stat") for task in Path(f"/proc/{pid}/task").iterdir()}
        if states == {"T"}:
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not stop: {states}")


def wait_until_gone(pid: int) -> None:
    """Until the process has exited (a zombie holds no sockets)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or state_in(stat) in "ZX":
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not exit")


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on 127.0.0.1:port (state 0A in /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def is_listening(pid: int, port: int) -> bool:
    inodes = listening_inodes(port)
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(link.removeprefix("socket:[").removesuffix("]") in inodes for link in links)


def wait_for_workers(main_pid: int, port: int, count: int, without: int | None = None) -> set[int]:
    """Until the server has ``count`` workers, each listening on the port."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = worker_pids(main_pid)
        if (
            len(pids) == count
            and without not in pids
            and all(is_listening(pid, port) for pid in pids)
        ):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"workers of {main_pid}: {worker_pids(main_pid)}")


def readyz(connection: http.client.HTTPConnection) -> str:
    """One request; http.client reopens the connection after a `Connection: close`."""
    connection.request("GET", "/readyz")
    response = connection.getresponse()
    assert response.status == 200
    response.read()
    return response.getheader("Connection", "")


def reconnect_after_the_crash(connection: http.client.HTTPConnection) -> None:
    """The first connection after a worker's death is sometimes reset: the kernel can still
    hand it to the dead worker's socket (net.ipv4.tcp_migrate_req is off here; sts serve
    warns about it). A client retries; so does this."""
    for _ in range(3):
        try:
            readyz(connection)
            return
        except ConnectionResetError:
            connection.close()
    readyz(connection)


def all_connections_on_one_worker(
    process: subprocess.Popen[bytes], host: str, port: int, count: int
) -> tuple[list[http.client.HTTPConnection], int]:
    """A worker crashes and clients reconnect before its replacement listens (granian's
    workers each listen on their own SO_REUSEPORT socket, so the kernel can only hand the
    new connections to the survivor). The main process is paused while the connections
    open, so that the replacement cannot be forked yet; then it is resumed. Returns the
    connections, all on the survivor, and the replacement's pid once it has started."""
    first = wait_for_workers(process.pid, port, 2)
    connections = [http.client.HTTPConnection(host, port, timeout=5) for _ in range(count)]
    os.kill(process.pid, signal.SIGSTOP)
    try:
        wait_until_stopped(process.pid)
        os.kill(min(first), signal.SIGKILL)
        wait_until_gone(min(first))
        for connection in connections:
            reconnect_after_the_crash(connection)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    (replacement,) = wait_for_workers(process.pid, port, 2, without=min(first)) - first
    time.sleep(1)  # let it finish starting
    return connections, replacement


@pytest.mark.slow
@pytest.mark.parametrize("recycle", [25, 0])
def test_connections_opened_while_a_worker_was_down_spread_to_its_replacement(
    env: dict[str, str], recycle: int
) -> None:
    """Every ``recycle``-th response closes its connection, whatever the load (one
    request at a time here, so spreading by load never acts: it is off in both cases)."""
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    args = ("--server", "granian", "--keepalive-recycle", str(recycle), "--no-spread-by-load")
    with server_process(env, args=args) as (base, process):
        host, port = base.removeprefix("http://").split(":")
        connections, replacement = all_connections_on_one_worker(process, host, int(port), 4)
        before = cpu_seconds(replacement)
        closes = 0
        for i in range(2000):
            closes += readyz(connections[i % 4]).lower() == "close"
        served = cpu_seconds(replacement) - before
        for connection in connections:
            connection.close()
    if recycle:
        assert closes >= 2000 // recycle - 2  # every 25th response of each worker
        assert served >= 0.1, served  # the replacement took connections and served them
    else:
        assert closes == 0
        assert served <= 0.03, served  # idle: every connection stayed on the survivor


def drive(connection: http.client.HTTPConnection, seconds: float, closes: Any, index: int) -> None:
    """A client process: requests back to back on its connection for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        closes[index] += readyz(connection).lower() == "close"


@pytest.mark.slow
@pytest.mark.parametrize("spread", [True, False])
def test_a_busy_worker_hands_connections_to_an_idle_one(env: dict[str, str], spread: bool) -> None:
    """Six clients at once keep the survivor's two threads busy while its replacement has
    no connection: spreading by load closes some of the survivor's connections, and the
    clients that land on the replacement on reconnecting are served there. Without it
    (and with no recycling), the replacement stays idle."""
    env = {**env, "STS_AUTO_MIGRATE": "true"}
    flag = "--spread-by-load" if spread else "--no-spread-by-load"
    args = ("--server", "granian", "--keepalive-recycle", "0", flag)
    clients = 6
    context = multiprocessing.get_context("fork")
    closes = context.RawArray("q", clients)
    with server_process(env, args=args) as (base, process):
        host, port = base.removeprefix("http://").split(":")
        connections, replacement = all_connections_on_one_worker(process, host, int(port), clients)
        before = cpu_seconds(replacement)
        drivers = [
            context.Process(target=drive, args=(connection, 3.0, closes, index))
            for index, connection in enumerate(connections)
        ]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join(30)
        served = cpu_seconds(replacement) - before
        for connection in connections:
            connection.close()
    assert all(driver.exitcode == 0 for driver in drivers)
    if spread:
        assert sum(closes) >= 1
        assert served >= 0.1, served
    else:
        assert sum(closes) == 0
        assert served <= 0.03, served
