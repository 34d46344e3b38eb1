"""Run a function in a real forked child and get back what it reported."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_forked_child(work: Callable[[], str]) -> str:
    """``work()``'s result in a child forked from this process (or the repr of what it
    raised); the child leaves with ``os._exit``, without running any cleanup."""
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
        return os.read(read, 1000).decode()
    finally:
        os.waitpid(pid, 0)
        os.close(read)
