"""``sts credentials``: make a service credential (API key) for the rules file."""

from __future__ import annotations

import click
import yaml

from sts.credentials import generate_api_key


@click.group("credentials")
def credentials_group() -> None:
    """Service credentials (long-lived API keys; only their hashes are stored)."""


@credentials_group.command("new")
@click.argument("name")
@click.option("--owner", required=True, help="The subject tokens exchanged with this key carry.")
def credentials_new(name: str, owner: str) -> None:
    """Print a new API key ONCE, and the rules-file entry (key id and hash) for NAME.

    The key is not stored anywhere: hand it to its owner now. The entry goes under
    ``credentials:`` in the rules file and reaches the database through a migration.
    """
    if not name.strip() or not owner.strip():
        raise click.UsageError("NAME and --owner take non-empty values")
    key = generate_api_key()
    entry = [
        {"name": name, "key_id": key.key_id, "secret_hash": key.secret_hash, "owner_subject": owner}
    ]
    click.echo(
        "# The API key, shown once (it is not stored; keep it in a secret manager):", err=True
    )
    click.echo(key.key, err=True)
    click.echo("# Add under `credentials:` in the rules file:")
    click.echo(yaml.safe_dump(entry, sort_keys=False), nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(credentials_group)
