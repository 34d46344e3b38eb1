"""``sts serve``: the service under gunicorn.

The app is built once in the master (``preload_app``): a bad configuration, a wrong key
passphrase or an old schema stops start-up once with one clear message, instead of every
worker crashing in a loop. Each worker then opens its own database connections.
"""

from __future__ import annotations

from typing import Any

import click
from flask import Flask
from gunicorn.app.base import BaseApplication

from sts.cli.common import load_settings
from sts.errors import StartupError


class StsGunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def _post_fork(_server: Any, worker: Any) -> None:
    # Connections opened in the master must not be shared across processes.
    app = worker.app.application
    app.extensions["sts"].engine.dispose(close=False)


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(bind: str, workers: int, access_log: bool) -> None:
    """Run the service under gunicorn."""
    from sts.app import create_app

    settings = load_settings()
    try:
        app = create_app(settings)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    app.extensions["sts"].engine.dispose()
    options: dict[str, Any] = {
        "bind": bind,
        "workers": workers,
        "worker_class": "sync",
        "preload_app": True,
        "keepalive": 75,
        "post_fork": _post_fork,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "proc_name": "sts",
    }
    click.echo(f"sts serving {settings.issuer} on http://{bind} with {workers} workers")
    StsGunicorn(app, options).run()


def register(cli: click.Group) -> None:
    cli.add_command(serve)
