"""The ``sts`` command: db, keys, check, serve, rules, clients, credentials."""

from __future__ import annotations

import click

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


@click.group()
@click.version_option(package_name="sts")
def cli() -> None:
    """sts: a security token service (RFC 8693 token exchange)."""


for _module in (db, keys, rules, explain, check, serve, clients, credentials, revoke, gc, exposure):
    _module.register(cli)


def main() -> None:
    cli()
