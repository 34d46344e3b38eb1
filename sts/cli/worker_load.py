"""Spreading keep-alive connections over granian's workers by load.

Each granian worker listens on its own ``SO_REUSEPORT`` socket: the kernel hashes every
new connection to one of them, blind to load, and a keep-alive connection then stays on
that worker for its whole life. With few long-lived connections (a reverse proxy's
upstream pool, a handful of CI runners, the benchmark's eight) the split drifts. Measured
(bench/README, eleventh sitting): eight connections over two workers spent about an eighth
of a run all on one worker, whose GIL then held the service to about one core while the
other worker idled; exchanges/s halved for seconds at a time.

So every worker measures how busy its WSGI threads are (thread-seconds inside the app, divided
by threads times wall time, over windows of ``WINDOW`` seconds) and publishes it on a board in
shared memory that the main process created before forking the workers. When a worker's
threads were nearly all busy and another live worker's markedly less, its next response
announces ``Connection: close`` (RFC 9112 §9.6: the server closes after sending it, so the
client never sends into a closing connection), at most one per window. The client
reconnects and the kernel hashes it anew: with two workers, to the idle one half of the
time. A worker never sheds toward one about as busy as itself, so balanced workers keep
their connections.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

WINDOW = 0.25  # seconds over which a worker measures its threads' busy fraction
BUSY = 0.8  # shed only from a worker whose threads were busy at least this fraction ...
MARGIN = 0.3  # ... and at least this much more than the least busy other live worker
STALE = 1.0  # a worker that has published nothing for this long is judged by its threads

# One slot per worker: its pid (0: free), busy fraction of its last window, when that was
# published (time.monotonic, one clock for every process of the machine), and how many
# requests are inside the app right now.
PID, BUSY_FRACTION, PUBLISHED, INSIDE = range(4)
FIELDS = 4


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerBoard:
    """The workers' figures in shared memory. Created by the main process before the
    fork, so that every worker, and any replacement of a dead one, inherits it."""

    def __init__(self, slots: int) -> None:
        context = multiprocessing.get_context("fork")
        self.slots = slots
        self._cells = context.RawArray("d", FIELDS * slots)
        self._claiming = context.Lock()

    def claim(self, pid: int) -> int | None:
        """A slot for this worker: a free one, or a dead worker's. None if every slot
        belongs to a live process (then this worker does not take part)."""
        with self._claiming:
            for slot in range(self.slots):
                owner = int(self._cells[slot * FIELDS + PID])
                if owner in (0, pid) or not is_alive(owner):
                    base = slot * FIELDS
                    self._cells[base : base + FIELDS] = [pid, 0.0, 0.0, 0]
                    return slot
        return None

    def publish(self, slot: int, busy: float, now: float) -> None:
        self._cells[slot * FIELDS + BUSY_FRACTION] = busy
        self._cells[slot * FIELDS + PUBLISHED] = now

    def set_inside(self, slot: int, inside: int) -> None:
        self._cells[slot * FIELDS + INSIDE] = inside

    def least_busy_other(self, slot: int, now: float) -> float | None:
        """The lowest busy fraction among the other live workers (None: there is none).
        A worker that finished no request for ``STALE`` seconds counts as idle if none of
        its threads is inside the app, and as fully busy if one is (stuck, e.g. on a
        database that does not answer: never shed connections towards it)."""
        lowest: float | None = None
        for other in range(self.slots):
            base = other * FIELDS
            pid = int(self._cells[base + PID])
            if other == slot or pid == 0:
                continue
            if now - self._cells[base + PUBLISHED] <= STALE:
                busy = self._cells[base + BUSY_FRACTION]
            elif not is_alive(pid):
                continue
            else:
                busy = 1.0 if self._cells[base + INSIDE] > 0 else 0.0
            lowest = busy if lowest is None else min(lowest, busy)
        return lowest


def should_shed(mine: float, least_other: float | None) -> bool:
    """Close one of this worker's connections: its threads were nearly all busy and
    another worker's markedly less."""
    return least_other is not None and mine >= BUSY and mine - least_other >= MARGIN


def spread_by_load(app: WSGIApp, board: WorkerBoard, threads: int) -> WSGIApp:
    """In a worker process, after the fork: ``app`` wrapped to take part in spreading,
    or ``app`` itself if the board has no slot for this worker."""
    slot = board.claim(os.getpid())
    if slot is None:
        log.warning("no free slot on the workers' board: this worker does not spread by load")
        return app
    return SpreadConnectionsByLoad(app, board, slot, threads)


class SpreadConnectionsByLoad:
    """WSGI middleware of one worker, in its ``slot`` of the board (module docstring)."""

    def __init__(
        self,
        app: WSGIApp,
        board: WorkerBoard,
        slot: int,
        threads: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.board = board
        self.slot = slot
        self.threads = threads
        self.clock = clock
        self.shed = 0  # responses that closed their connection (tests read it)
        self._lock = threading.Lock()
        self._inside = 0
        self._busy_seconds = 0.0
        self._changed = self._window_start = clock()
        self._close_next = False

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        closing = self._enter()
        try:
            if closing:
                return self.app(environ, announcing_close(start_response))
            return self.app(environ, start_response)
        finally:
            self._leave()

    def _enter(self) -> bool:
        with self._lock:
            self._account(1)
            closing, self._close_next = self._close_next, False
            self.shed += closing
        return closing

    def _leave(self) -> None:
        with self._lock:
            self._account(-1)

    def _account(self, change: int) -> None:
        """Under the lock: add the thread-seconds spent inside the app since the last
        change, then apply ``change``; at the end of a window, publish and decide."""
        now = self.clock()
        self._busy_seconds += self._inside * (now - self._changed)
        self._changed = now
        self._inside += change
        self.board.set_inside(self.slot, self._inside)
        elapsed = now - self._window_start
        if elapsed < WINDOW:
            return
        busy = min(self._busy_seconds / (self.threads * elapsed), 1.0)
        self.board.publish(self.slot, busy, now)
        self._busy_seconds = 0.0
        self._window_start = now
        self._close_next = should_shed(busy, self.board.least_busy_other(self.slot, now))


def announcing_close(start_response: Callable[..., Any]) -> Callable[..., Any]:
    def start_closing_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if not any(name.lower() == "connection" for name, _ in headers):
            headers = [*headers, ("Connection", "close")]
        return start_response(status, headers, exc_info)

    return start_closing_response
