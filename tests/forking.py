"""Run a function in a real forked child and get back what it reported."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable


def in_forked_child(work: Callable[[], str], timeout: float = 30) -> str:
    """``work()``'s result in a child forked from this process (or the repr of what it
    raised); the child leaves with ``os._exit``, without running any cleanup. A child that
    has reported nothing after ``timeout`` seconds is killed: "timed out"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, work().encode()[:1000])
        except BaseException as exc:  # reported to the parent
            os.write(write, repr(exc).encode()[:1000])
        finally:
            os._exit(0)
    os.close(write)
    try:
        if not select.select([read], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
            return "timed out"
        return os.read(read, 1000).decode()
    finally:
        os.waitpid(pid, 0)
        os.close(read)
