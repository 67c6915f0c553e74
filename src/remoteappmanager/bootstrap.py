"""The composition root: builds adapters from settings; the only module that imports them.

Nothing here connects at import time: engines connect on first use, the Docker client on
its first call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.db.migrate import SchemaStatus
from remoteappmanager.adapters.db.repositories import SqlDatabase
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.settings import Settings

__all__ = [
    "Database",
    "SchemaStatus",
    "build_database",
    "build_runtime",
    "initialise_database",
    "schema_head",
    "schema_status",
    "upgrade_database",
]


@dataclass(frozen=True, slots=True)
class Database:
    """The database as the rest of the program sees it: units of work, and an end."""

    location: str
    """Where it is, for messages (never the password)."""
    unit_of_work: UnitOfWorkFactory
    ping: Callable[[], Awaitable[None]]
    """Reach the database once; ``Unavailable`` with the reason if it cannot be used."""
    close: Callable[[], Awaitable[None]]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def build_database(database_url: str) -> Database:
    """The database behind an async SQLAlchemy URL (``Settings.database_url``)."""
    sql = SqlDatabase(database_url)
    return Database(
        location=sql.location, unit_of_work=sql.unit_of_work, ping=sql.ping, close=sql.close
    )


async def schema_status(database_url: str) -> SchemaStatus:
    """Where the database's schema stands against this code's migrations."""
    return await migrate.status(database_url)


async def upgrade_database(database_url: str) -> SchemaStatus:
    """Migrate the database to the newest schema (creating a SQLite file if needed)."""
    return await migrate.upgrade(database_url)


async def initialise_database(database_url: str) -> SchemaStatus:
    """Create the schema on a new database; ``Exists`` if one is there already."""
    return await migrate.initialise(database_url)


def schema_head() -> str:
    """The newest schema revision this code ships."""
    return migrate.head()


def build_runtime(settings: Settings) -> ContainerRuntime:
    """The Docker engine named by the settings (not contacted until first used)."""
    # Imported here so that the database tools never load aiodocker.
    from remoteappmanager.adapters.docker import AiodockerRuntime, tls_context

    ssl_context = None
    if settings.docker_cert_path is not None and (
        settings.docker_tls_verify or (settings.docker_host or "").startswith("tcp://")
    ):
        ssl_context = tls_context(settings.docker_cert_path, settings.docker_tls_verify)
    return AiodockerRuntime(settings.docker_host, ssl_context)
