"""SQLite WAL checkpoints off the request path.

In WAL mode a commit only appends to the ``-wal`` file; a *checkpoint* copies those pages
back into the database file and, with ``synchronous=NORMAL``, fsyncs the WAL before and the
database after. SQLite's default runs it inside whichever commit pushes the WAL past 1,000
pages: on this project's exchange (~15 pages per commit) one exchange in ~65 paid 11-15 ms
of fsync, inside the write gate, so the other worker waited as well: single exchanges
back to back had a p99 of 20-22 ms against a median of 1.6 (``python -m bench.profile``,
see bench/README.md).

Here every connection's automatic checkpoint is raised to a safety net
(``SAFETY_NET_PAGES``) and one daemon thread per process checkpoints every ``interval``
seconds on its own connection, in two steps:

1. ``PRAGMA wal_checkpoint(PASSIVE)`` beside the writers: it copies every frame committed
   so far (and does the fsyncs) without taking any lock a writer needs, in SQLite's C code
   with the GIL released. This is the bulk of the work.
2. once the WAL is longer than ``RESTART_PAGES``, the same again *behind the write gate*:
   it copies the few frames committed during step 1. Only a checkpoint that reaches the
   end of the WAL with no writer in between lets the next writer start the WAL from its
   beginning again; a checkpoint that always runs beside writers never catches up, and
   the WAL would grow until the safety net checkpointed inside a commit (measured: every
   ~1 s at 700 exchanges/s, 25-90 ms each).

Durability is unchanged: a commit is durable in the WAL exactly as before; only the copy
into the main file moves.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

from sqlalchemy.exc import OperationalError

from sts.db.locks import SqliteWriteGate

log = logging.getLogger(__name__)

# Step 2 holds every writer back for a few ms (two fsyncs): it runs only once the WAL has
# grown past RESTART_PAGES frames (one frame per changed page a commit: ~650 exchanges;
# 8.4 MB with sts's 1 KiB pages, 32 MB in a database created with 4 KiB pages), so that
# stall is rare, while step 1 keeps the copying off the request path.
RESTART_PAGES = 8192
# A connection still checkpoints by itself past this many WAL frames (17 MB with 1 KiB
# pages, 64 MB with 4 KiB): only if the background thread is not running (a CLI command,
# or the thread stopped).
SAFETY_NET_PAGES = 16_384


class WalCheckpointer:
    """One background checkpoint thread per process for one SQLite database file.

    Started lazily (:meth:`ensure_running`, by the first transaction of a process), so a
    forked worker starts its own: threads do not survive ``fork``. It stops on
    :meth:`stop` (the engine is disposed) or when the database file is gone.
    """

    def __init__(
        self,
        database: str,
        interval: float,
        gate: SqliteWriteGate,
        restart_pages: int = RESTART_PAGES,
    ) -> None:
        self.database = database
        self.interval = interval
        self.gate = gate
        self.restart_pages = restart_pages
        self.runs = 0  # checkpoints completed by this process's thread (for tests/metrics)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pid = 0

    def ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            return
        with self._lock:
            thread = self._thread
            if thread is not None and self._pid == os.getpid() and thread.is_alive():
                return
            self._stopping = threading.Event()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stopping,), name="sts-wal-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _loop(self, stopping: threading.Event) -> None:
        if not Path(self.database).exists():
            return
        # mode=rw: never create the file (it may have been removed with its directory).
        uri = Path(self.database).resolve().as_uri() + "?mode=rw"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=0, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint thread not started: %s", exc)
            return
        try:
            while not stopping.wait(self.interval):
                if not self.checkpoint(connection):
                    return
        finally:
            connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> bool:
        """Steps 1 and 2 (module docstring); False when the database is gone (the thread
        ends)."""
        if not Path(self.database).exists():
            return False
        try:
            if _passive_checkpoint(connection) >= self.restart_pages:
                self.gate.acquire()
                try:
                    _passive_checkpoint(connection)
                finally:
                    self.gate.release()
        except (sqlite3.OperationalError, OperationalError) as exc:
            # "database is locked": another process is checkpointing, or the write gate
            # was not free within its timeout; next round.
            log.debug("WAL checkpoint skipped: %s", exc)
            return True
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)
            return True
        self.runs += 1
        return True


def _passive_checkpoint(connection: sqlite3.Connection) -> int:
    """Frames the WAL holds (0: nothing to do). SQLite returns (busy, log, checkpointed)."""
    busy, frames, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy:
        raise sqlite3.OperationalError("database is locked")
    return max(int(frames), 0)
