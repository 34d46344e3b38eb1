"""Helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import Engine

from sts.clock import Clock, system_clock
from sts.db.engine import make_engine
from sts.errors import StartupError
from sts.settings import Settings


def load_settings() -> Settings:
    """Settings from the environment; an invalid one is a one-line error, exit code 1."""
    try:
        return Settings.from_env()
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def open_engine(settings: Settings | None = None) -> Iterator[Engine]:
    """An engine for one command, disposed afterwards (no connection left behind)."""
    engine = make_engine((settings or load_settings()).effective_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def current_clock() -> Clock:
    """The system clock, unless the invoker passed one in (``obj={"clock": ...}``):
    time is injected, so tests drive commands with the same fixed clock as the app."""
    obj = click.get_current_context().obj
    clock = obj.get("clock") if isinstance(obj, dict) else None
    return clock if clock is not None else system_clock
