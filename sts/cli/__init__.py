"""The ``sts`` command: db, keys, check, serve (and more as capabilities land)."""

from __future__ import annotations

import click

from sts.cli import check, db, exposure, gc, keys, revoke, serve


@click.group()
@click.version_option(package_name="sts")
def cli() -> None:
    """sts: a security token service (RFC 8693 token exchange)."""


for _module in (db, keys, check, serve, revoke, gc, exposure):
    _module.register(cli)


def main() -> None:
    cli()
