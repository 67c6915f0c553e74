"""`remoteappmanager`: run the service, or manage its database schema (`db ...`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from remoteappmanager import __version__, bootstrap
from remoteappmanager.cli.output import fail
from remoteappmanager.domain.errors import RemoteAppError
from remoteappmanager.settings import Settings, SettingsError, load_settings
from remoteappmanager.web import app as web_app
from remoteappmanager.web.logs import configure_logging

PROG = "remoteappmanager"
UPGRADE_COMMAND = f"`{PROG} db upgrade`"
_T = TypeVar("_T")


@click.group(
    PROG, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name=PROG)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run the SimPhoNy-Remote service (configured by REMOTEAPP_* variables).

    The service refuses to start on a database whose schema is not the current one.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    try:
        settings.require_service_settings()
    except SettingsError as exc:
        fail(PROG, str(exc), 2)
    status = _run(bootstrap.schema_status(settings.database_url))
    if not status.at_head:
        fail(PROG, _not_at_head(status))
    try:
        serve(settings)
    except RemoteAppError as exc:
        # Problems found while wiring the service (e.g. a bad demo_applications entry).
        fail(PROG, str(exc))


@main.group()
def db() -> None:
    """Manage the database schema (REMOTEAPP_DATABASE_URL)."""


@db.command()
def upgrade() -> None:
    """Migrate the database to the current schema (creating a SQLite file if needed)."""
    url = _settings().database_url
    before = _run(bootstrap.schema_status(url))
    if not before.known:
        fail(PROG, _not_at_head(before))
    after = _run(bootstrap.upgrade_database(url))
    if before.current == after.current:
        click.echo(f"{after.location}: already at the current schema ({after.current})")
    else:
        click.echo(
            f"{after.location}: upgraded from {before.current or 'an empty database'} "
            f"to {after.current}"
        )


@db.command()
def check() -> None:
    """Exit 0 if the schema is the current one, else 1 (saying how to fix it)."""
    status = _run(bootstrap.schema_status(_settings().database_url))
    if not status.at_head:
        fail(PROG, _not_at_head(status))
    click.echo(f"{status.location}: at the current schema ({status.current})")


@db.command()
def current() -> None:
    """Print the database's schema revision (and the current one)."""
    status = _run(bootstrap.schema_status(_settings().database_url))
    recorded = status.current or ("none (no database)" if not status.exists else "none (empty)")
    marker = " (current)" if status.at_head else f" (current is {status.head})"
    click.echo(f"{status.location}: {recorded}{marker}")


# ------------------------------------------------------------------------------ plumbing
def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(PROG, str(exc), 2)


def _run(work: Coroutine[Any, Any, _T]) -> _T:
    try:
        return asyncio.run(work)
    except RemoteAppError as exc:
        fail(PROG, str(exc))


def _not_at_head(status: bootstrap.SchemaStatus) -> str:
    if not status.exists:
        return f"there is no {status.location}; run {UPGRADE_COMMAND} to create it"
    if status.current is None:
        return f"the {status.location} has no schema yet; run {UPGRADE_COMMAND} to create it"
    if not status.known:
        return (
            f"the {status.location} has schema revision {status.current}, newer than this "
            "software knows; upgrade remoteappmanager"
        )
    return (
        f"the {status.location} has schema revision {status.current}, not the current "
        f"{status.head}; run {UPGRADE_COMMAND}"
    )


def serve(settings: Settings) -> None:
    """Build the service from ``settings`` through the composition root, and run it."""
    configure_logging(settings.log_format, settings.log_level)
    web_app.serve(bootstrap.build_web_deps(settings))
