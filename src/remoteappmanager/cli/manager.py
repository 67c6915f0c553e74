"""`remoteappmanager`: run the service, or manage its database schema (`db ...`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import structlog
from aiohttp import web

from remoteappmanager import __version__, bootstrap
from remoteappmanager.cli.output import fail
from remoteappmanager.domain.errors import RemoteAppError, Unavailable
from remoteappmanager.settings import Settings, SettingsError, load_settings
from remoteappmanager.web.admission import LISTEN_BACKLOG, tune_garbage_collector
from remoteappmanager.web.app import create_app
from remoteappmanager.web.deps import WebDeps
from remoteappmanager.web.listening import BIND_ERRORS, SERVICE_SETTING, listen_failure
from remoteappmanager.web.logs import configure_logging

log = structlog.get_logger(__name__)

PROG = "remoteappmanager"
UPGRADE_COMMAND = f"`{PROG} db upgrade`"
# Seconds in-flight requests get to finish once a stop is asked for.
SHUTDOWN_TIMEOUT = 10.0
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
    configure_logging(settings.log_format, settings.log_level)
    try:
        serve(bootstrap.build(settings))
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


def serve(built: WebDeps) -> None:
    """Run the service wired by ``bootstrap.build`` on the host and port of
    ``JUPYTERHUB_SERVICE_URL`` until SIGINT/SIGTERM.

    uvloop is used when installed. On a stop signal the server stops accepting, gives
    in-flight requests ``SHUTDOWN_TIMEOUT`` seconds, then closes every resource in reverse
    order.
    """
    settings = built.settings
    url = urlsplit(settings.jupyterhub_service_url)
    host = url.hostname or "127.0.0.1"
    port = url.port or 80
    log.info("service_starting", host=host, port=port, prefix=settings.jupyterhub_service_prefix)
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    main_task = loop.create_task(_run_until_stopped(create_app(built), host, port))
    try:
        loop.run_until_complete(main_task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except OSError as exc:
        # Binding the service's own port (the gate's is explained where it binds).
        if exc.errno not in BIND_ERRORS:
            raise
        raise Unavailable(listen_failure("the service", host, port, exc, SERVICE_SETTING)) from exc
    finally:
        if not main_task.done():  # stopped by a signal: clean up what runs
            main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main_task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    log.info("service_stopped")


async def _run_until_stopped(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully: ``web.run_app`` without its one gap.

    ``run_app`` starts the application outside its clean-up: when one resource fails to start
    (a taken port, say), those started before it are left to the loop's finaliser, which prints
    a traceback for each. Here the clean-up covers the start as well.
    """
    runner = web.AppRunner(
        app, handle_signals=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
        tune_garbage_collector()  # once everything start-up builds is there
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
