"""``sts serve``: the service under granian (default) or gunicorn.

The app is built once in the main process: a bad configuration, a wrong key passphrase or
an old schema stops start-up once with one clear message, instead of every worker
crashing in a loop. Workers are then forked from it (granian with the ``fork`` start
method and a loader that hands over the already-built app; gunicorn ``preload_app``), and
each worker drops the inherited pool so that it opens its own database connections.

* ``granian`` (default): a Rust HTTP server (WSGI interface) with HTTP/1.1 keep-alive; the
  app runs on a small pool of blocking threads per worker, and each worker listens on its
  own ``SO_REUSEPORT`` socket, so the kernel spreads new connections over the workers. It
  serves more exchanges for less CPU than gunicorn on every row of the benchmark
  (bench/README). A keep-alive connection stays on the worker that accepted it, so
  connections opened while a worker was down would stay on the others for good: every
  1000th response of a worker closes its connection (``--keepalive-recycle``), and the
  connections spread again. Those reconnections land where the kernel's hash sends them,
  so with few connections the split drifts, at times all onto one worker: a worker whose
  threads are nearly all busy while another's are markedly less also closes a connection
  (``--spread-by-load``, ``sts.cli.worker_load``). A worker that dies is replaced (forked
  again from the built app).
* ``gunicorn``: sync workers, one request at a time per worker. Sync workers do not keep
  HTTP connections alive: every request pays a TCP connect, and every request is
  therefore spread over the workers by the kernel. A dead worker is replaced.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask import Flask

from sts.cli.common import load_settings
from sts.cli.worker_load import WorkerBoard, WSGIApp, announcing_close, spread_by_load
from sts.errors import StartupError

SERVERS = ("granian", "gunicorn")  # the first is the default
# granian: every this-many-th response of a worker closes its keep-alive connection.
KEEPALIVE_RECYCLE = 1000


@dataclass(frozen=True)
class ServeOptions:
    """How to serve the built app; the options of ``sts serve`` (and of the bench's
    servers)."""

    bind: str = "127.0.0.1:8080"
    workers: int = 2
    threads: int = 2  # granian only: WSGI threads per worker
    keepalive_recycle: int = KEEPALIVE_RECYCLE  # granian only; 0: never
    access_log: bool = False
    spread_by_load: bool = True  # granian only (sts.cli.worker_load)


TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")

log = logging.getLogger(__name__)


class RecycleKeepAliveConnections:
    """WSGI middleware: every ``every``-th response of this worker carries ``Connection:
    close``, so that its client reconnects and the kernel hashes the new connection to one
    of the workers' ``SO_REUSEPORT`` sockets, whichever workers are up by then.

    Why: under granian a keep-alive connection stays for its whole life on the worker that
    accepted it. Connections opened while one worker was down (a worker replaced after a
    crash, a slow start) all sit on the other worker, and the new one serves nothing until
    clients reconnect: throughput halves for good. Recycling spreads them again within
    ``every`` x connections-per-worker requests. The close is announced in the response
    (RFC 9112 §9.6: the server closes after sending it), so a client never sends a request
    into a connection the server is closing, unlike an idle timeout. The counter is per
    worker process (each forked worker starts its own); ``next`` on ``itertools.count`` is
    one C call, atomic under the GIL, so the worker's threads need no lock.
    """

    def __init__(self, app: WSGIApp, every: int) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.app = app
        self.every = every
        self._served = itertools.count(1)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if next(self._served) % self.every:
            return self.app(environ, start_response)
        return self.app(environ, announcing_close(start_response))


def _forget_inherited_connections(app: Flask) -> None:
    # Connections opened in the main process must not be shared across processes.
    services = app.extensions.get("sts")
    if services is not None:
        services.engine.dispose(close=False)


def run_gunicorn(app: Flask, options: ServeOptions) -> None:
    from gunicorn.app.base import BaseApplication

    class StsGunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            return app

    def post_fork(_server: Any, _worker: Any) -> None:
        _forget_inherited_connections(app)

    settings: dict[str, Any] = {
        "bind": options.bind,
        "workers": options.workers,
        "worker_class": "sync",
        "preload_app": True,
        "keepalive": 75,
        "post_fork": post_fork,
        "accesslog": "-" if options.access_log else None,
        "errorlog": "-",
        "proc_name": "sts",
    }
    StsGunicorn().run()


def warn_if_queued_connections_die_with_their_worker() -> None:
    """Each granian worker has its own SO_REUSEPORT socket: when a worker dies, the
    connections the kernel had queued on its socket are reset, unless the kernel may move
    them to another socket of the group (Linux >= 5.14, net.ipv4.tcp_migrate_req)."""
    try:
        enabled = TCP_MIGRATE_REQ.read_text().strip() != "0"
    except OSError:
        return  # not Linux, or an older kernel: nothing to advise
    if not enabled:
        log.warning(
            "net.ipv4.tcp_migrate_req is 0: connections queued on a worker that dies are "
            "reset (clients retry); set it to 1 to hand them to another worker"
        )


def run_granian(app: Flask, options: ServeOptions) -> None:
    from granian.constants import Interfaces
    from granian.server import Server

    host, _, port = options.bind.rpartition(":")
    if not host or not port.isdigit():
        raise click.ClickException(f"--bind must be HOST:PORT, got {options.bind!r}")
    # The built app reaches the workers by fork, exactly as with gunicorn's preload; under
    # "spawn" every worker would build its own app (and could crash-loop on bad config).
    multiprocessing.set_start_method("fork", force=True)
    if options.workers > 1:
        warn_if_queued_connections_die_with_their_worker()

    # Before the fork, so that every worker (and a replacement) shares it.
    board = WorkerBoard(options.workers) if options.spread_by_load and options.workers > 1 else None

    def load_app(_target: str) -> Callable[..., Any]:
        _forget_inherited_connections(app)  # runs in the worker, after the fork
        served: WSGIApp = app
        if board is not None:
            served = spread_by_load(served, board, options.threads)
        if options.keepalive_recycle:
            served = RecycleKeepAliveConnections(served, options.keepalive_recycle)
        return served

    server = Server(
        "sts.app:create_app",  # informational only: load_app returns the built app
        address=host,
        port=int(port),
        interface=Interfaces.WSGI,
        workers=options.workers,
        blocking_threads=options.threads,
        log_access=options.access_log,
        websockets=False,
        respawn_failed_workers=True,
    )
    server.serve(target_loader=load_app)


def build_app() -> Flask:
    """Build the app once, in the main process; a startup error is one clear message."""
    from sts.app import create_app

    settings = load_settings()
    try:
        app = create_app(settings)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    app.extensions["sts"].engine.dispose()
    return app


def run_server(app: Flask, server: str, options: ServeOptions) -> None:
    """Serve an already-built WSGI app (also used by the benchmark harness)."""
    if server == "granian":
        run_granian(app, options)
    else:
        run_gunicorn(app, options)


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--server",
    type=click.Choice(SERVERS),
    default=SERVERS[0],
    show_default=True,
    help="granian: Rust HTTP server with keep-alive; gunicorn: sync workers, no keep-alive.",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="granian only: WSGI threads per worker (at most the database pool size, 10).",
)
@click.option(
    "--keepalive-recycle",
    default=KEEPALIVE_RECYCLE,
    show_default=True,
    type=click.IntRange(0),
    help="granian only: every N-th response of a worker closes its keep-alive connection "
    "(Connection: close), so that connections spread again over the workers; 0: never.",
)
@click.option(
    "--spread-by-load/--no-spread-by-load",
    default=True,
    show_default=True,
    help="granian only: a worker whose threads are nearly all busy, while another's are "
    "markedly less, closes one keep-alive connection per quarter second so that its client "
    "reconnects, possibly to the other worker.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    bind: str,
    workers: int,
    server: str,
    threads: int,
    keepalive_recycle: int,
    spread_by_load: bool,
    access_log: bool,
) -> None:
    """Run the service."""
    app = build_app()
    settings = app.extensions["sts"].settings
    click.echo(f"sts serving {settings.issuer} on http://{bind} with {workers} {server} workers")
    options = ServeOptions(bind, workers, threads, keepalive_recycle, access_log, spread_by_load)
    run_server(app, server, options)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
