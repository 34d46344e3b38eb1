"""``sts keys``: inspect and rotate signing keys, respond to a compromise, rewrap at rest.

Secrets never come from argv (they would show in ``ps`` and shell history): the new
secret for ``rewrap`` is read from an environment variable or from stdin.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import click
from sqlalchemy.orm import Session, sessionmaker

from sts.cli.common import load_settings, open_engine
from sts.clock import system_clock
from sts.db import queries
from sts.db.engine import make_session_factory
from sts.errors import StartupError
from sts.keys import lifecycle
from sts.keys.keystore import KeyStore, make_keystore
from sts.keys.rotation import Schedule, next_due
from sts.settings import KEYSTORES, Settings

# A kid is base64url (RFC 7638), so it may begin with "-": take it as the argument, not
# as an unknown option.
KID_ARGUMENT = {"ignore_unknown_options": True}

NEW_SECRET_VARIABLES = {
    "file": "STS_NEW_KEY_PASSPHRASE",
    "database": "STS_NEW_KEY_ENCRYPTION_KEY",
}


@dataclass(frozen=True)
class KeyContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    keystore: KeyStore
    schedule: Schedule


@contextmanager
def open_keys() -> Iterator[KeyContext]:
    """Settings, database and keystore for one command; errors become one-line messages."""
    settings = load_settings()
    with open_engine(settings) as engine:
        try:
            yield KeyContext(
                settings,
                make_session_factory(engine),
                make_keystore(settings),
                Schedule.from_settings(settings),
            )
        except StartupError as exc:
            raise click.ClickException(str(exc)) from None


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


@click.group("keys")
def keys_group() -> None:
    """Signing keys: list, rotate, retire, compromised, rewrap."""


@keys_group.command("list")
def keys_list() -> None:
    """List signing keys: kid, algorithm, state, timestamps, tokens signed."""
    with open_engine() as engine, make_session_factory(engine)() as session:
        rows = queries.all_signing_keys(session)
        counts = queries.tokens_signed_per_kid(session)
    click.echo(
        f"{'kid':<44} {'alg':<6} {'state':<11} {'created':<20} {'activated':<20} "
        f"{'retired':<20} tokens"
    )
    for row in rows:
        click.echo(
            f"{row.kid:<44} {row.alg:<6} {row.state:<11} {format_time(row.created_at):<20} "
            f"{format_time(row.activated_at):<20} {format_time(row.retired_at):<20} "
            f"{counts.get(row.kid, 0)}"
        )


@keys_group.command("rotate")
def keys_rotate() -> None:
    """Apply the rotation steps due now (cron-friendly: does nothing when nothing is due)."""
    with open_keys() as keys:
        done = lifecycle.rotate(keys.session_factory, keys.keystore, keys.schedule, system_clock)
        if done:
            for line in done:
                click.echo(line)
            return
        with keys.session_factory() as session:
            views = lifecycle.key_views(queries.published_signing_keys(session))
        due = next_due(views, keys.schedule, system_clock())
        click.echo(f"nothing due; next check due at {format_time(due)}")


@keys_group.command("retire", context_settings=KID_ARGUMENT)
@click.argument("kid")
def keys_retire(kid: str) -> None:
    """Stop KID from signing now (it stays published for STS_KEY_RETENTION)."""
    with open_keys() as keys:
        click.echo(
            lifecycle.retire(keys.session_factory, keys.keystore, keys.schedule, kid, system_clock)
        )


@keys_group.command("compromised", context_settings=KID_ARGUMENT)
@click.argument("kid")
def keys_compromised(kid: str) -> None:
    """Emergency: unpublish KID at once, sign with a fresh key, revoke its tokens."""
    with open_keys() as keys:
        result = lifecycle.compromise(
            keys.session_factory, keys.keystore, keys.settings.signing_alg, kid, system_clock
        )
    click.echo(f"{kid} marked compromised and removed from the JWKS")
    if result.new_kid:
        click.echo(f"new signing key {result.new_kid} is active (lead time skipped)")
    click.echo(f"{result.tokens_revoked} issued tokens revoked; revocation of kind 'key' recorded")


@keys_group.command("rewrap")
@click.option(
    "--to",
    "target",
    type=click.Choice(KEYSTORES),
    default=None,
    help="keystore to write to (default: STS_KEYSTORE); moves keys between keystores",
)
def keys_rewrap(target: str | None) -> None:
    """Re-encrypt every kept private key under a new passphrase or key-encryption key.

    The new secret is read from STS_NEW_KEY_PASSPHRASE (file keystore) or
    STS_NEW_KEY_ENCRYPTION_KEY (database keystore), else from stdin; never from argv.
    Resumable: keys the new secret already opens are skipped. Key files in the old
    format (PBKDF2) are rewritten with scrypt: give the current passphrase to convert them.
    """
    with open_keys() as keys:
        target = target or keys.settings.keystore
        secret = read_new_secret(target)
        result = lifecycle.rewrap(keys.settings, keys.session_factory, target, secret)
    click.echo(
        f"re-encrypted {len(result.rewrapped)} keys into the {target} keystore "
        f"({len(result.already_done)} already done)"
    )
    if target == keys.settings.keystore == "file" and secret == keys.settings.key_passphrase:
        click.echo("same passphrase as before (key files converted): nothing to change")
        return
    setting = "STS_KEY_PASSPHRASE" if target == "file" else "STS_KEY_ENCRYPTION_KEY"
    click.echo(
        f"now set STS_KEYSTORE={target} and {setting} to the new secret on every replica "
        "and restart them; run this again afterwards to catch keys rotated meanwhile"
    )


def read_new_secret(target: str) -> str:
    variable = NEW_SECRET_VARIABLES[target]
    from_env = os.environ.get(variable)  # the CLI is the edge: it may read the environment
    if from_env:
        return from_env
    if sys.stdin.isatty():
        prompt = f"new secret ({variable})"
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))
    secret = sys.stdin.readline().strip()
    if not secret:
        raise click.ClickException(f"no new secret: set {variable} or pipe it on stdin")
    return secret


def register(cli: click.Group) -> None:
    cli.add_command(keys_group)
