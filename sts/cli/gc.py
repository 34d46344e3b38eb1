"""``sts gc``: delete expired lineage, old lifted or expired blocks and audit; retire spent
lists."""

from __future__ import annotations

import click

from sts.cli.common import current_clock, load_settings, open_engine
from sts.db.engine import make_session_factory
from sts.db.locks import write_transaction
from sts.housekeeping import collect_garbage


@click.command("gc")
def gc_command() -> None:
    """Housekeeping; safe to run from cron on any one replica at any time."""
    settings = load_settings()
    now = current_clock()()
    with open_engine(settings) as engine:
        session_factory = make_session_factory(engine)
        collected = collect_garbage(lambda: write_transaction(session_factory), settings, now)
    click.echo(
        f"deleted {collected.lineage} lineage row(s), {collected.blocks} lifted or expired "
        f"block(s), {collected.audit} audit record(s), {collected.replay_records} used "
        f"assertion or DPoP proof id(s); retired {collected.status_lists} status list(s)"
    )


def register(cli: click.Group) -> None:
    cli.add_command(gc_command)
