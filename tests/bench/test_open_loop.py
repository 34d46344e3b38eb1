"""The open loop (``LoadSpec.rate``) and ``python -m bench latency``'s pure parts: the send
schedule (intended times, phase offsets, late sends), one run against a tiny threaded HTTP
server on 127.0.0.1 (achieved ≈ offered), and latency counted from the intended send time
behind a stalled answer. Timing assertions are lower bounds that a slow machine cannot
break, or generous ranges."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import latency
from bench.__main__ import main as bench_main
from bench.__main__ import parse_args
from bench.loadgen import (
    LoadResult,
    LoadSpec,
    ProcessResult,
    Progress,
    Schedule,
    build_request,
    open_loop_thread,
    run_load,
)

OK_BODY = b'{"access_token":"x"}'


@contextmanager
def http_server(stall_on: int | None = None, stall: float = 0.05) -> Iterator[int]:
    """Keep-alive HTTP/1.1, a thread per connection, 200 + OK_BODY to every POST; the
    ``stall_on``-th request received (1-based, over all connections) is answered after
    ``stall`` seconds."""
    received = 0
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed ACK

        def do_POST(self) -> None:
            nonlocal received
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                received += 1
                number = received
            if number == stall_on:
                time.sleep(stall)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(OK_BODY)))
            self.end_headers()
            self.wfile.write(OK_BODY)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(3)


# ---- the schedule --------------------------------------------------------------------------


def test_each_thread_sends_every_interval_from_its_phase() -> None:
    # 50 requests/s over 4 connections: each sends every 80 ms, thread i from i * 20 ms.
    schedules = [Schedule.for_thread(100.0, 50.0, 4, i) for i in range(4)]
    assert [s.interval for s in schedules] == pytest.approx([0.08] * 4)
    assert [s.phase for s in schedules] == pytest.approx([0.0, 0.02, 0.04, 0.06])
    assert [schedules[1].due(k) for k in range(3)] == pytest.approx([100.02, 100.10, 100.18])


def test_threads_together_send_at_an_even_rate_never_in_lockstep() -> None:
    rate, connections = 300.0, 16
    dues = sorted(
        Schedule.for_thread(5.0, rate, connections, i).due(k)
        for i in range(connections)
        for k in range(20)
    )
    gaps = [b - a for a, b in itertools.pairwise(dues)]
    assert min(gaps) == pytest.approx(1 / rate)
    assert max(gaps) == pytest.approx(1 / rate)
    assert len(dues) == len(set(dues)) == connections * 20


def test_late_means_more_than_one_interval_after_due() -> None:
    schedule = Schedule(start=10.0, interval=0.1, phase=0.05)
    assert schedule.due(3) == pytest.approx(10.35)
    assert not schedule.is_late(10.35, 3)  # on time
    assert not schedule.is_late(10.30, 3)  # early (never happens: the thread sleeps)
    assert not schedule.is_late(10.44, 3)  # behind, but within one interval
    assert schedule.is_late(10.46, 3)


def test_a_schedule_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        Schedule.for_thread(0.0, 0.0, 4, 0)
    with pytest.raises(ValueError, match="must be positive"):
        run_load(LoadSpec(port=1, requests=[b""], rate=-1.0))


# ---- against a local server ----------------------------------------------------------------


def test_latency_runs_from_the_intended_send_time_behind_a_stall() -> None:
    """One connection, a request every 10 ms; the server holds the 20th answer 50 ms. The
    stalled request and the ones due during the stall (sent late, back to back, once it is
    answered) all carry the stall: request j behind it at least 50 - 10 j ms. Measured from
    the actual send, only the stalled one would."""
    with http_server(stall_on=20, stall=0.05) as port:
        spec = LoadSpec(port=port, requests=[build_request(port, "/token", [("a", "b")])])
        start = time.perf_counter() + 0.05
        schedule = Schedule(start=start, interval=0.01)
        result = ProcessResult()
        open_loop_thread(spec, 0, schedule, start, start + 0.595, result, threading.Lock())
    assert result.scheduled == 60
    assert not result.errors
    assert result.ok == result.requests == len(result.latencies) == len(result.send_lags)
    assert result.ok >= 50  # a very slow machine may leave a few unsent at the end
    slowest = sorted(result.latencies, reverse=True)
    for j, bound in enumerate((0.050, 0.040, 0.030, 0.020)):
        assert slowest[j] >= bound, (j, slowest[:5])
    assert result.late >= 3  # the 2nd to 4th behind the stall went out > 10 ms late
    assert max(result.send_lags) >= 0.040
    # Request by request (no errors, so aligned): latency = send lag + time from the send.
    assert len(result.from_send) == result.ok
    for total, lag, naive in zip(result.latencies, result.send_lags, result.from_send, strict=True):
        assert total == pytest.approx(lag + naive, abs=1e-9)
        assert lag >= 0  # never sent early


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: fork with threads
def test_open_loop_holds_the_offered_rate() -> None:
    with http_server() as port:
        spec = LoadSpec(
            port=port,
            requests=[build_request(port, "/token", [("n", str(i))]) for i in range(10)],
            duration=1.0,
            warmup=0.2,
            concurrency=4,
            processes=2,
            rate=200.0,
        )
        progress = Progress(spec.concurrency)
        result = run_load(spec, progress=progress)
    assert result.offered_rate == 200.0
    assert 195 <= result.scheduled <= 205  # 1 s at 200/s, the threads evenly phased
    assert result.sent + result.unsent == result.scheduled
    assert result.errors == {}
    assert 0.75 * 200 <= result.rate <= 1.05 * 200
    assert progress.counts() == (result.ok, 0)
    assert result.connects_per_request < 0.1  # keep-alive
    assert 0 < result.latencies_ms["p50"] <= result.latencies_ms["max"] < 5000
    summary = result.as_dict()["open_loop"]
    assert summary["scheduled"] == result.scheduled
    assert summary["latency_from"] == "intended send time"
    assert summary["latency_from_actual_send_ms"]["p50"] <= result.latencies_ms["p50"]


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_without_a_rate_the_loop_stays_closed() -> None:
    with http_server() as port:
        spec = LoadSpec(
            port=port,
            requests=[build_request(port, "/token", [("a", "b")])],
            duration=0.3,
            warmup=0.1,
            concurrency=2,
            processes=1,
        )
        result = run_load(spec)
    assert result.ok > 0
    assert (result.offered_rate, result.scheduled, result.sent, result.late) == (None, 0, 0, 0)
    assert "open_loop" not in result.as_dict()


# ---- python -m bench latency ---------------------------------------------------------------


def test_latency_mode_arguments() -> None:
    args = parse_args(["latency"])
    assert (args.scenario, args.database, args.fraction, args.rate) == (
        "ci-deploy",
        "sqlite",
        0.5,
        None,
    )
    assert (args.concurrency, args.duration, args.peak_concurrency) == (16, 30.0, 8)
    args = parse_args(["latency", "--servers", "gunicorn,granian", "--rate", "150"])
    assert (args.servers, args.rate) == (["gunicorn", "granian"], 150.0)
    assert parse_args([]).concurrency == 8
    with pytest.raises(SystemExit):
        parse_args(["--rate", "100"])  # not for the closed-loop modes
    with pytest.raises(SystemExit):
        parse_args(["latency", "--fraction", "0"])
    assert args.targets == ["sts"]
    args = parse_args(["latency", "--targets", "floor,governance-off,sts"])
    assert args.targets == ["floor", "governance-off", "sts"]
    with pytest.raises(SystemExit):
        parse_args(["latency", "--targets", "oidc-provider"])  # the peers are not measured
    with pytest.raises(SystemExit):
        parse_args(["--targets", "floor"])  # the latency mode's
    with pytest.raises(SystemExit):
        parse_args(["latency", "--targets", ""])


def test_latency_of_each_target_on_a_real_server(capsys: pytest.CaptureFixture[str]) -> None:
    """A short real run: sts, sts with governance off and the floor each get a peak and
    an open loop at half of it, and a row of the table; the floor answers the peers'
    contract."""
    argv = [
        *("latency", "--targets", "sts,governance-off,floor", "--servers", "gunicorn"),
        *("--duration", "1", "--warmup", "0.5", "--peak-duration", "1", "--pool", "40"),
        *("--concurrency", "2", "--peak-concurrency", "2", "--processes", "1"),
    ]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| target")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {"sts", "governance-off", "floor"}
    assert rows["floor"][1:4] == ["gunicorn", "-", "peer-shape"]
    assert rows["sts"][2:4] == ["sqlite", "ci-deploy"]
    by = {target: dict(zip(latency.HEADERS, cells, strict=True)) for target, cells in rows.items()}
    for target, cells in by.items():
        assert float(cells["peak exch/s"]) > 0, target
        assert float(cells["achieved/s"]) > 0, target
        assert cells["errors"] == "0", target


def _open_result(late: int, scheduled: int = 1000, sent: int = 1000) -> LoadResult:
    return LoadResult(
        duration=10.0,
        ok=sent,
        errors={},
        error_samples=[],
        latencies_ms={"p50": 4.0, "p90": 6.0, "p99": 9.5, "max": 30.0},
        connects_per_request=1.0,
        server_cpu_seconds=2.5,
        client_cpu_seconds=1.0,
        run_seconds=12.0,
        machine_busy_seconds=5.0,
        offered_rate=100.0,
        scheduled=scheduled,
        sent=sent,
        late=late,
    )


def test_latency_row_cells_and_warnings() -> None:
    row = latency.LatencyRow("sts", "gunicorn", "sqlite", "ci-deploy", 0.5, result=_open_result(0))
    cells = latency.cells(row)
    assert len(cells) == len(latency.HEADERS)
    by = dict(zip(latency.HEADERS, cells, strict=True))
    assert (by["load"], by["peak exch/s"], by["offered/s"], by["achieved/s"]) == (
        "0.5 x peak",
        "-",
        "100",
        "100",
    )
    assert (by["p99 ms"], by["late"], by["unsent"], by["srv CPU ms/exch"]) == (
        "9.50",
        "0",
        "0",
        "2.50",
    )
    assert latency.warnings(row, 16) == []
    behind = latency.LatencyRow(
        "sts", "granian", "sqlite", "ci-deploy", None, result=_open_result(50)
    )
    assert latency.cells(behind)[4] == "--rate"
    assert any("fell behind" in w for w in latency.warnings(behind, 16))
    # 100/s over one connection at a 4 ms median: busy 40 % of the time.
    assert any("--concurrency" in w for w in latency.warnings(row, 1))
    failed = latency.LatencyRow("sts", "granian", "sqlite", "ci-deploy", 0.5, failure="boom")
    assert len(latency.cells(failed)) == len(latency.HEADERS)
