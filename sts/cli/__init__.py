"""The ``sts`` command: db, keys, check, serve, rules, clients, credentials."""

from __future__ import annotations

from typing import Any

import click
from alembic.util import CommandError

from sts.cli import (
    check,
    clients,
    credentials,
    db,
    explain,
    exposure,
    gc,
    keys,
    revoke,
    rules,
    serve,
)
from sts.errors import StartupError


class _Group(click.Group):
    """A command that cannot run (StartupError: no migrations/ folder, a key that does not
    open...; Alembic's CommandError: an unknown revision) says why on one line, exit code
    1, as a bad setting does: not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (StartupError, CommandError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="sts")
def cli() -> None:
    """sts: a security token service (RFC 8693 token exchange)."""


for _module in (db, keys, rules, explain, check, serve, clients, credentials, revoke, gc, exposure):
    _module.register(cli)


def main() -> None:
    cli()
