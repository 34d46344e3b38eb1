"""``sts rules explain``: why the exchange would allow or refuse a request."""

from __future__ import annotations

import sys
from typing import TextIO

import click

from sts.cli.common import load_settings
from sts.cli.rules import rules_group
from sts.errors import StartupError
from sts.protocol import SUPPORTED_SUBJECT_TOKEN_TYPES, TOKEN_TYPE_JWT


@rules_group.command("explain")
@click.option(
    "--subject-token",
    "subject_file",
    type=click.File("r"),
    default="-",
    show_default=True,
    help="File holding the subject token ('-' for stdin).",
)
@click.option(
    "--subject-token-type",
    type=click.Choice(SUPPORTED_SUBJECT_TOKEN_TYPES),
    default=TOKEN_TYPE_JWT,
    show_default=True,
)
@click.option("--actor-token", "actor_file", type=click.File("r"), default=None)
@click.option(
    "--actor-token-type",
    type=click.Choice(SUPPORTED_SUBJECT_TOKEN_TYPES),
    default=TOKEN_TYPE_JWT,
    show_default=True,
)
@click.option("--client", "client_id", default=None, help="The (authenticated) client id.")
@click.option("--audience", multiple=True)
@click.option("--resource", multiple=True)
@click.option("--scope", default=None, help="Space-delimited scopes, as in the request.")
def rules_explain(
    subject_file: TextIO,
    subject_token_type: str,
    actor_file: TextIO | None,
    actor_token_type: str,
    client_id: str | None,
    audience: tuple[str, ...],
    resource: tuple[str, ...],
    scope: str | None,
) -> None:
    """Run the exchange's verification and rules on a request, without issuing anything.

    Prints the decision, the rule that decided, and for each rule considered the
    condition that failed. Exit code 0 when the exchange would be allowed, 1 otherwise.
    """
    from sts.app import build_services
    from sts.explain import explain

    settings = load_settings()
    try:
        services = build_services(settings)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        result = explain(
            services,
            subject_token=subject_file.read().strip(),
            subject_token_type=subject_token_type,
            actor_token=actor_file.read().strip() if actor_file else None,
            actor_token_type=actor_token_type if actor_file else None,
            client_id=client_id,
            targets=audience + resource,
            scopes=tuple(scope.split()) if scope is not None else None,
        )
    finally:
        services.engine.dispose()
    for line in result.lines():
        click.echo(line)
    sys.exit(0 if result.allowed else 1)


def register(cli: click.Group) -> None:
    """Registered on the shared ``rules`` group at import; nothing to add to the root."""
    del cli
