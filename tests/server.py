"""Run a real ``sts serve`` on 127.0.0.1 for tests that need a real server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import TEST_PASSPHRASE


def service_env(database_url: str, tmp_path: Path, issuer: str) -> dict[str, str]:
    """The environment of an ``sts`` command or server: its database, its keys under
    tmp_path (encrypted with the tests' passphrase), its instance folder."""
    return {
        "STS_ISSUER": issuer,
        "STS_DATABASE_URL": database_url,
        "STS_KEYS_DIR": str(tmp_path / "keys"),
        "STS_INSTANCE_DIR": str(tmp_path / "instance"),
        "STS_KEY_PASSPHRASE": TEST_PASSPHRASE,
    }


def worker_pids(main_pid: int) -> set[int]:
    """The server's workers: the main process's children."""
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
    return {int(pid) for pid in children}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


@contextmanager
def running_server(
    env: Mapping[str, str],
    workers: int = 2,
    cwd: str | None = None,
    ready_path: str = "/readyz",
    args: Sequence[str] = (),
) -> Iterator[str]:
    with server_process(env, workers, cwd, ready_path, args) as (base, _process):
        yield base


@contextmanager
def server_process(
    env: Mapping[str, str],
    workers: int = 2,
    cwd: str | None = None,
    ready_path: str = "/readyz",
    args: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ready ``sts serve`` in its own process group: (base URL, the main process)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sts",
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            *args,
        ],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"sts serve exited with {process.returncode}:\n{output}")
            try:
                if get_json(base + ready_path, timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sts serve did not become ready within 30 s")
            time.sleep(0.1)
        yield base, process
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout:
            process.stdout.close()
