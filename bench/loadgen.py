"""An HTTP/1.1 load generator: separate processes, one thread per connection.

Closed loop (the default): each thread holds one keep-alive connection and sends the next
request as soon as the previous response is complete. Open loop (``LoadSpec.rate``): a
fixed arrival rate in total, split evenly over the connection threads; each thread sends
on its own fixed schedule (see ``Schedule``) and latency is measured from the *intended*
send time, so a server stall shows up in the latency of every request that should have
been sent during it (no coordinated omission). Requests are pre-built byte strings, sent
round robin, so the client spends its CPU on sockets rather than on formatting. The
client is a minimal raw-socket HTTP/1.1 client: Content-Length, chunked and
close-delimited bodies; a ``Connection: close`` answer (gunicorn sync workers) makes the
next request open a new connection, and that reconnect is part of the measured latency.

Only 127.0.0.1 is ever contacted. Every loop is bounded by the run's end time and by the
socket timeout.
"""

from __future__ import annotations

import base64
import contextlib
import multiprocessing
import resource
import socket
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any
from urllib.parse import urlencode

from bench import procfs

LOOPBACK = "127.0.0.1"


class HttpError(Exception):
    """The connection broke or the server answered something that is not HTTP/1.1."""


class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connects = 0

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        self.connects += 1
        return sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock, self.buffer = None, b""

    def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one pre-built request; return (status, body). A reused connection that
        the server closed while idle is reopened once, transparently."""
        reused = self.sock is not None
        try:
            return self._exchange(data)
        except (OSError, HttpError):
            self.close()
            if not reused:
                raise
        return self._exchange(data)

    def _exchange(self, data: bytes) -> tuple[int, bytes]:
        sock = self.sock or self._connect()
        sock.sendall(data)
        head = self._read_until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get(b"connection", b"").lower()
        keep_alive = connection != b"close" and (
            parts[0] == b"HTTP/1.1" or connection == b"keep-alive"
        )
        if b"content-length" in headers:
            body = self._read_exact(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._read_chunked()
        else:
            body, keep_alive = self._read_to_close(), False
        if not keep_alive:
            self.close()
        return status, body

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed by the server")
        return chunk

    def _read_until(self, marker: bytes) -> bytes:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                found, self.buffer = self.buffer[:index], self.buffer[index + len(marker) :]
                return found
            if len(self.buffer) > 1 << 20:
                raise HttpError("response head too large")
            self.buffer += self._recv()

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")  # no trailers expected
                return bytes(body)
            body += self._read_exact(size)
            self._read_exact(2)

    def _read_to_close(self) -> bytes:
        assert self.sock is not None
        body = bytearray(self.buffer)
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return bytes(body)
            body += chunk


def build_request(
    port: int,
    path: str,
    form: Sequence[tuple[str, str]],
    basic: tuple[str, str] | None = None,
    *,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A complete POST with an urlencoded form (and HTTP Basic client authentication),
    then ``headers``' extra lines (e.g. ``("DPoP", proof)``), in order."""
    body = urlencode(form).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {LOOPBACK}:{port}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
        "Accept: application/json",
    ]
    if basic is not None:
        raw = f"{basic[0]}:{basic[1]}".encode()
        lines.append("Authorization: Basic " + base64.b64encode(raw).decode())
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def is_success(status: int, body: bytes) -> bool:
    return status == 200 and b'"access_token"' in body


def post_all(
    port: int, requests: Sequence[bytes], threads: int = 4, timeout: float = 10.0
) -> list[bytes]:
    """Send each request once (a few threads, keep-alive); return the response bodies, in
    order. Used to pre-mint tokens through a running server. Raises on any failure."""
    results: list[bytes | None] = [None] * len(requests)
    failures: list[str] = []
    lock = threading.Lock()
    cursor = iter(range(len(requests)))

    def work() -> None:
        client = Client(port, timeout)
        try:
            while not failures:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                status, body = client.request(requests[index])
                if not is_success(status, body):
                    failures.append(f"HTTP {status}: {body[:300]!r}")
                    return
                results[index] = body
        except (OSError, HttpError) as exc:
            failures.append(repr(exc))
        finally:
            client.close()

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout + len(requests) * timeout)
    if failures:
        raise RuntimeError(f"pre-minting failed: {failures[0]}")
    return [body for body in results if body is not None]


# ---- the load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    port: int
    # Pre-built, sent round robin; connection thread k starts at k * (len // concurrency),
    # so it sends len // concurrency of them before it reaches another thread's first: a
    # pool of single-use requests is sized for that (``bench.scenarios.single_use_pool``).
    requests: Sequence[bytes]
    duration: float = 10.0
    warmup: float = 2.0
    concurrency: int = 8
    processes: int = 2
    timeout: float = 10.0
    # Open loop: requests per second in total (warmup included), split evenly over the
    # ``concurrency`` connection threads. None: closed loop. Keep the rate per connection
    # (rate / concurrency) well below 1 / latency, or a slow answer holds up the
    # connection's next sends (still counted, from their intended time, but then the client
    # rather than the server limits the load: see ``LoadResult.late``).
    rate: float | None = None


@dataclass(frozen=True)
class Schedule:
    """The open loop's send times for one connection thread: request k is due at
    ``start + phase + k * interval``. With ``for_thread`` every thread has the same
    interval (connections / rate) and thread i is offset by i / rate, so all threads
    together send at an even 1 / rate and never in lockstep."""

    start: float
    interval: float
    phase: float = 0.0

    @classmethod
    def for_thread(cls, start: float, rate: float, connections: int, index: int) -> Schedule:
        if rate <= 0 or connections <= 0:
            raise ValueError(f"need rate > 0 and connections > 0, got {rate}, {connections}")
        interval = connections / rate
        return cls(start, interval, (index % connections) * interval / connections)

    def due(self, k: int) -> float:
        """The intended send time of request k (k = 0, 1, ...)."""
        return self.start + self.phase + k * self.interval

    def is_late(self, sent: float, k: int) -> bool:
        """Request k went out more than one interval after it was due."""
        return sent - self.due(k) > self.interval


class Progress:
    """Exchanges and errors counted so far in the measured window, shared with the
    load-generator processes while they run (``python -m bench soak`` reads it at every
    sample). One slot per connection thread, each written only by its own thread, so no
    lock: the reader sums aligned 64-bit integers. Counted under the same rule as
    ``LoadResult.ok``/``errors``: started after the warmup, finished before the end."""

    def __init__(self, slots: int) -> None:
        context = multiprocessing.get_context("fork")
        self.ok = context.RawArray("q", slots)
        self.errors = context.RawArray("q", slots)

    def add(self, slot: int, good: bool) -> None:
        if good:
            self.ok[slot] += 1
        else:
            self.errors[slot] += 1

    def counts(self) -> tuple[int, int]:
        """(exchanges, errors) so far."""
        return sum(self.ok), sum(self.errors)


@dataclass
class ProcessResult:
    ok: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds, measured window
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    connects: int = 0
    requests: int = 0  # measured window, ok or not
    cpu_seconds: float = 0.0  # this load-generator process, whole run
    # Open loop only, requests due in the measured window:
    scheduled: int = 0  # due (sent or not)
    late: int = 0  # sent more than one interval after they were due
    send_lags: array[float] = field(default_factory=lambda: array("d"))  # sent - due, seconds
    # finished - sent, successes: what a closed-loop style (coordinated-omission) count sees
    from_send: array[float] = field(default_factory=lambda: array("d"))

    def count(self, good: bool, latency: float, kind: str, detail: str) -> None:
        """One measured request: its latency when it succeeded, else its error (the first
        three kept as samples)."""
        self.requests += 1
        if good:
            self.ok += 1
            self.latencies.append(latency)
        else:
            self.errors[kind] += 1
            if len(self.samples) < 3:
                self.samples.append(f"{kind}: {detail}")

    def merge(self, other: ProcessResult) -> None:
        self.ok += other.ok
        self.requests += other.requests
        self.latencies.extend(other.latencies)
        self.errors.update(other.errors)
        self.samples.extend(other.samples[: max(0, 3 - len(self.samples))])
        self.connects += other.connects
        self.cpu_seconds += other.cpu_seconds
        self.scheduled += other.scheduled
        self.late += other.late
        self.send_lags.extend(other.send_lags)
        self.from_send.extend(other.from_send)


@dataclass
class LoadResult:
    duration: float
    ok: int
    errors: dict[str, int]
    error_samples: list[str]
    latencies_ms: dict[str, float]
    connects_per_request: float
    server_cpu_seconds: float | None
    client_cpu_seconds: float
    run_seconds: float  # warmup + measured: what client_cpu_seconds covers
    rss_start: Mapping[str, int] = field(default_factory=dict)
    rss_end: Mapping[str, int] = field(default_factory=dict)
    database_cpu_seconds: float | None = None  # PostgreSQL backends (SQLite is in-process)
    machine_busy_seconds: float | None = None  # every process on the machine
    # Open loop only (``offered_rate`` None: closed loop). Counted over the requests due in
    # the measured window: ``scheduled`` of them, ``sent`` = ok + errors, ``unsent`` never
    # left because their thread was still behind at the end.
    offered_rate: float | None = None
    scheduled: int = 0
    sent: int = 0
    late: int = 0
    send_lag_ms: dict[str, float] = field(default_factory=dict)
    from_send_ms: dict[str, float] = field(default_factory=dict)  # latency from actual send

    @property
    def unsent(self) -> int:
        return max(0, self.scheduled - self.sent)

    @property
    def database_cpu_ms_per_exchange(self) -> float | None:
        if self.database_cpu_seconds is None or not self.ok:
            return None
        return 1000.0 * self.database_cpu_seconds / self.ok

    @property
    def foreign_cores(self) -> float | None:
        """Cores busy with neither the server, the database nor the load generator: other
        work on the machine that competed with this measurement."""
        if self.machine_busy_seconds is None or self.server_cpu_seconds is None:
            return None
        ours = self.server_cpu_seconds + (self.database_cpu_seconds or 0.0)
        ours += self.client_cpu_seconds * self.duration / max(self.duration, self.run_seconds)
        return max(0.0, (self.machine_busy_seconds - ours) / self.duration)

    @property
    def rate(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    @property
    def server_cpu_ms_per_exchange(self) -> float | None:
        if self.server_cpu_seconds is None or not self.ok:
            return None
        return 1000.0 * self.server_cpu_seconds / self.ok

    @property
    def server_cores(self) -> float | None:
        if self.server_cpu_seconds is None:
            return None
        return self.server_cpu_seconds / self.duration

    def as_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration,
            "ok": self.ok,
            "exchanges_per_s": round(self.rate, 1),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "latency_ms": self.latencies_ms,
            "connects_per_request": round(self.connects_per_request, 3),
            "server_cpu_s": self.server_cpu_seconds,
            "server_cpu_ms_per_exchange": self.server_cpu_ms_per_exchange,
            "server_cores_busy": self.server_cores,
            "client_cpu_s": round(self.client_cpu_seconds, 3),
            "database_cpu_s": self.database_cpu_seconds,
            "database_cpu_ms_per_exchange": self.database_cpu_ms_per_exchange,
            "machine_busy_s": self.machine_busy_seconds,
            "foreign_cores_busy": self.foreign_cores,
            "rss_start_kib": dict(self.rss_start),
            "rss_end_kib": dict(self.rss_end),
            **({} if self.offered_rate is None else {"open_loop": self.open_loop_dict()}),
        }

    def open_loop_dict(self) -> dict[str, Any]:
        return {
            "offered_per_s": round(self.offered_rate or 0.0, 1),
            "achieved_per_s": round(self.rate, 1),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "unsent": self.unsent,
            "late": self.late,
            "send_lag_ms": self.send_lag_ms,
            "latency_from_actual_send_ms": self.from_send_ms,
            "latency_from": "intended send time",
        }


def _thread_loop(
    spec: LoadSpec,
    offset: int,
    measure_from: float,
    end: float,
    result: ProcessResult,
    lock: threading.Lock,
    slot: int = 0,
    progress: Progress | None = None,
) -> None:
    client = Client(spec.port, spec.timeout)
    requests, count = spec.requests, len(spec.requests)
    part = ProcessResult()
    index = offset
    clock = time.perf_counter
    try:
        while True:
            started = clock()
            if started >= end:
                break
            connects_before = client.connects
            good, kind, detail = _send(client, requests[index % count])
            if not good and not kind.startswith("HTTP "):
                time.sleep(0.01)  # no answer (refused, broken): a retry must not spin
            finished = clock()
            index += 1
            if measure_from <= started and finished <= end:
                part.connects += client.connects - connects_before
                part.count(good, finished - started, kind, detail)
                if progress is not None:
                    progress.add(slot, good)
    finally:
        client.close()
    with lock:
        result.merge(part)


def _send(client: Client, raw: bytes) -> tuple[bool, str, str]:
    """(success, error kind, error detail) of one request; a broken connection is closed
    so that the next request reconnects."""
    try:
        status, body = client.request(raw)
    except (OSError, HttpError) as exc:
        client.close()
        return False, type(exc).__name__, str(exc)
    if is_success(status, body):
        return True, "", ""
    return False, f"HTTP {status}", body[:200].decode(errors="replace")


def open_loop_thread(
    spec: LoadSpec,
    offset: int,
    schedule: Schedule,
    measure_from: float,
    end: float,
    result: ProcessResult,
    lock: threading.Lock,
    slot: int = 0,
    progress: Progress | None = None,
) -> None:
    """One connection of the open loop (times are ``time.perf_counter`` values).

    Request k is sent at ``schedule.due(k)``, or at once when the thread is behind (a slow
    answer held it up): it never sleeps a negative time and never shifts the schedule, so
    it catches up by sending back to back. A request is measured when it was *due* in
    ``[measure_from, end)``, whenever its answer arrives (at most the socket timeout after
    ``end``), and its latency runs from the due time, not from the actual send. Requests
    due before ``end`` but still not sent at ``end`` are counted as scheduled, not sent."""
    client = Client(spec.port, spec.timeout)
    requests, count = spec.requests, len(spec.requests)
    part = ProcessResult()
    clock, k = time.perf_counter, 0
    try:
        while True:
            due = schedule.due(k)
            if due >= end:
                break
            k += 1
            measured = due >= measure_from
            part.scheduled += measured
            now = clock()
            if now >= end:
                continue  # behind at the end: the rest of the backlog is never sent
            if now < due:
                time.sleep(due - now)
            sent = clock()
            connects_before = client.connects
            good, kind, detail = _send(client, requests[(offset + k - 1) % count])
            finished = clock()
            if not measured:
                continue
            part.connects += client.connects - connects_before
            part.send_lags.append(sent - due)
            part.late += schedule.is_late(sent, k - 1)
            part.count(good, finished - due, kind, detail)
            if good:
                part.from_send.append(finished - sent)
            if progress is not None:
                progress.add(slot, good)
    finally:
        client.close()
    with lock:
        result.merge(part)


def _process_main(
    spec: LoadSpec,
    threads: int,
    first: int,
    start: float,
    pipe: Pipe,
    progress: Progress | None = None,
) -> None:
    """One load-generator process: ``threads`` connections until ``start+warmup+duration``
    (wall clock, shared by all processes)."""
    # perf_counter is per-process; translate the shared wall-clock schedule once.
    offset = time.perf_counter() - time.time()
    measure_from = start + spec.warmup + offset
    end = start + spec.warmup + spec.duration + offset
    time.sleep(max(0.0, start - time.time()))
    result = ProcessResult()
    lock = threading.Lock()
    spread = max(1, len(spec.requests) // max(1, spec.concurrency))
    workers = []
    for i in range(threads):
        index = first + i
        args: tuple[Any, ...]
        if spec.rate is None:
            target: Callable[..., None] = _thread_loop
            args = (spec, index * spread, measure_from, end, result, lock, index, progress)
        else:
            schedule = Schedule.for_thread(start + offset, spec.rate, spec.concurrency, index)
            target = open_loop_thread
            args = (spec, index * spread, schedule, measure_from, end, result, lock, index)
            args += (progress,)
        workers.append(threading.Thread(target=target, args=args, daemon=True))
    for worker in workers:
        worker.start()
    for worker in workers:
        # The open loop may send its last request just before the end: 2 timeouts (retry).
        worker.join(
            spec.warmup + spec.duration + spec.timeout * (1 if spec.rate is None else 2) + 5
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    pipe.send(result)
    pipe.close()


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def run_load(
    spec: LoadSpec,
    server_pid: int | None = None,
    database_pids: Callable[[], list[int]] | None = None,
    progress: Progress | None = None,
    monitor: Callable[[float, float], None] | None = None,
) -> LoadResult:
    """Run the closed loop from ``spec.processes`` forked processes; sample the server's
    process tree (CPU, RSS), the database's server processes (PostgreSQL backends, when
    given) and the whole machine from /proc at the start and end of the measured window.

    ``progress`` (at least ``spec.concurrency`` slots) is updated by the load processes as
    exchanges complete. ``monitor(measure_from, end)`` (wall-clock times) runs in this
    process during the measured window, instead of sleeping through it, and must return by
    ``end``.

    With ``spec.rate`` the loop is open (see ``open_loop_thread``): server CPU, RSS and
    machine load are still read at the window's end, while the last answers (to requests
    due before the end) may arrive after it."""
    if progress is not None and len(progress.ok) < spec.concurrency:
        raise ValueError(f"progress needs {spec.concurrency} slots, has {len(progress.ok)}")
    if spec.rate is not None and spec.rate <= 0:
        raise ValueError(f"the open loop's rate must be positive, got {spec.rate}")
    context = multiprocessing.get_context("fork")
    start = time.time() + 0.3
    processes = max(1, min(spec.processes, spec.concurrency))
    base, extra = divmod(spec.concurrency, processes)
    children = []
    first = 0
    for number in range(processes):
        threads = base + (1 if number < extra else 0)
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_process_main,
            args=(spec, threads, first, start, sender, progress),
            daemon=True,
        )
        child.start()
        sender.close()
        children.append((child, receiver))
        first += threads
    rss_start: dict[str, int] = {}
    cpu_start = cpu_end = None
    rss_end: dict[str, int] = {}
    time.sleep(max(0.0, start + spec.warmup - time.time()))
    machine_start = procfs.machine_busy_seconds()
    db_start = _cpu_of(database_pids)
    if server_pid is not None:
        cpu_start = procfs.tree_cpu_seconds(server_pid)
        rss_start = procfs.tree_rss_kib(server_pid)
    if monitor is not None:
        monitor(start + spec.warmup, start + spec.warmup + spec.duration)
    time.sleep(max(0.0, start + spec.warmup + spec.duration - time.time()))
    if server_pid is not None:
        cpu_end = procfs.tree_cpu_seconds(server_pid)
        rss_end = procfs.tree_rss_kib(server_pid)
    db_end = _cpu_of(database_pids)
    machine = procfs.machine_busy_seconds() - machine_start
    total = ProcessResult()
    deadline = time.monotonic() + spec.timeout * (1 if spec.rate is None else 2) + 10
    for child, receiver in children:
        if receiver.poll(max(0.1, deadline - time.monotonic())):
            part: ProcessResult = receiver.recv()
            total.merge(part)
        else:
            total.errors["load generator process timed out"] += 1
        child.join(1.0)
        if child.is_alive():
            child.kill()
            child.join(1.0)
    server_cpu = None
    if cpu_start is not None and cpu_end is not None:
        server_cpu = cpu_end - cpu_start
    return LoadResult(
        duration=spec.duration,
        ok=total.ok,
        errors=dict(total.errors),
        error_samples=total.samples[:3],
        latencies_ms=distribution_ms(total.latencies),
        connects_per_request=total.connects / max(1, total.requests),
        server_cpu_seconds=round(server_cpu, 3) if server_cpu is not None else None,
        client_cpu_seconds=total.cpu_seconds,
        run_seconds=spec.warmup + spec.duration,
        rss_start=rss_start,
        rss_end=rss_end,
        database_cpu_seconds=_cpu_delta(db_start, db_end),
        machine_busy_seconds=round(machine, 3),
        offered_rate=spec.rate,
        scheduled=total.scheduled,
        sent=total.requests if spec.rate is not None else 0,
        late=total.late,
        send_lag_ms=distribution_ms(total.send_lags) if spec.rate is not None else {},
        from_send_ms=distribution_ms(total.from_send) if spec.rate is not None else {},
    )


def distribution_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 (nearest rank) and max, in ms rounded to 0.01."""
    ordered = sorted(seconds)
    values = {
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else float("nan"),
    }
    return {k: round(v * 1000, 2) for k, v in values.items()}


def _cpu_of(pids: Callable[[], list[int]] | None) -> dict[int, float] | None:
    if pids is None:
        return None
    return {pid: procfs.cpu_seconds(pid) for pid in pids()}


def _cpu_delta(start: dict[int, float] | None, end: dict[int, float] | None) -> float | None:
    """CPU used in the window by the processes seen at the end (a backend that appeared
    during the window counts from zero)."""
    if start is None or end is None:
        return None
    return round(sum(value - start.get(pid, 0.0) for pid, value in end.items()), 3)
