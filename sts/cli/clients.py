"""``sts clients``: hash a client secret for the rules file."""

from __future__ import annotations

import sys

import click

from sts.credentials import MIN_CLIENT_SECRET_LENGTH, hash_secret


@click.group("clients")
def clients_group() -> None:
    """OAuth clients of the token endpoint."""


@clients_group.command("hash-secret")
def clients_hash_secret() -> None:
    """Read a client secret from stdin; print its hash for ``secret_hash`` in the rules file.

    The secret comes from stdin, never argv: arguments show up in shell history and ``ps``.
    """
    secret = sys.stdin.readline().rstrip("\r\n")
    if len(secret) < MIN_CLIENT_SECRET_LENGTH:
        raise click.ClickException(
            f"the secret must be at least {MIN_CLIENT_SECRET_LENGTH} characters long "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    click.echo(hash_secret(secret))


def register(cli: click.Group) -> None:
    cli.add_command(clients_group)
