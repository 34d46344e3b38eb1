"""Start and stop the servers under test as subprocesses on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def serve_in_this_process(description: str, default_bind: str, build: Callable[[], Any]) -> None:
    """The command line of a bench-only server (floor, no-governance): the options that
    :func:`command_for` passes, then ``build()``'s app served exactly as ``sts serve`` does."""
    import argparse

    from sts.cli.serve import SERVERS, ServeOptions, run_server

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bind", default=default_bind)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run_server(build(), args.server, ServeOptions(args.bind, args.workers, args.threads))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    name: str
    pid: int  # the main process; its tree is what CPU and RSS are measured on
    port: int
    log: Path


def command_for(kind: str, port: int, workers: int, server: str, threads: int) -> list[str]:
    """``sts`` is the real ``sts serve``; ``sts-nogov``, ``sts-minimal`` and ``floor`` are
    bench-only apps served by the same server code."""
    module = {
        "sts": "sts",
        "sts-nogov": "bench.no_governance",
        "sts-minimal": "bench.minimal_record",
        "floor": "bench.floor",
    }[kind]
    command = [sys.executable, "-m", module]
    if kind == "sts":
        command.append("serve")
    return [
        *command,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--server",
        server,
        "--threads",
        str(threads),
    ]


def _ready(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def running(
    command: Sequence[str],
    name: str,
    port: int,
    env: Mapping[str, str],
    log: Path,
    ready_path: str,
    timeout: float = 60.0,
) -> Iterator[RunningServer]:
    """Run ``command`` in its own session; wait for ``ready_path`` to answer 200; on exit
    TERM the whole group, then KILL after 10 s."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            list(command),
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _ready(port, ready_path):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within {timeout:.0f} s (log: {log})")
            time.sleep(0.1)
        time.sleep(0.3)  # let every worker finish booting
        yield RunningServer(name, process.pid, port, log)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
