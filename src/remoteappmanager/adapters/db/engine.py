"""Async engines for SQLite and PostgreSQL, configured the same way wherever they are made."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from remoteappmanager.domain.errors import InvalidRequest

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT = 10.0
# No statement of ours takes long: one that does is waiting on a server that has gone away
# (or stopped), and the request must fail with ``Unavailable`` instead of hanging.
POSTGRES_COMMAND_TIMEOUT = 15.0
# How long a request waits for a free pooled connection before it is refused.
POSTGRES_POOL_TIMEOUT = 10.0
POSTGRES_POOL_SIZE = 5
POSTGRES_MAX_OVERFLOW = 10
POSTGRES_POOL_RECYCLE = 1800


def parse_url(url: str | URL) -> URL:
    """A SQLAlchemy URL for one of the two supported async drivers; ``InvalidRequest`` else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The text may hold a password: do not repeat it.
        raise InvalidRequest("the database URL is not a valid SQLAlchemy URL") from None
    if parsed.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
        raise InvalidRequest(
            f"unsupported database driver {parsed.drivername!r} "
            "(use sqlite+aiosqlite or postgresql+asyncpg)"
        )
    return parsed


def is_sqlite(url: str | URL) -> bool:
    return parse_url(url).get_backend_name() == "sqlite"


def describe(url: str | URL) -> str:
    """Where the database is, for messages: never the password, never the query string."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database or ':memory:'}"
    name = parsed.database or parsed.username or ""
    return f"PostgreSQL database {name!r} at {parsed.host or 'localhost'}:{parsed.port or 5432}"


def create_engine(url: str | URL, *, enforce_foreign_keys: bool = True) -> AsyncEngine:
    """An engine for ``url`` (an async SQLAlchemy URL); connects lazily.

    SQLite gets foreign keys (for ON DELETE CASCADE), WAL, a busy timeout and real
    transactions; ``enforce_foreign_keys=False`` exists for schema migrations, which SQLite
    performs by recreating tables (with foreign keys on, dropping a parent would cascade).
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed)
        _configure_sqlite(engine, enforce_foreign_keys=enforce_foreign_keys)
        return engine
    return create_async_engine(
        parsed,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_pre_ping=True,
        pool_recycle=POSTGRES_POOL_RECYCLE,
        pool_timeout=POSTGRES_POOL_TIMEOUT,
        connect_args={
            "timeout": POSTGRES_CONNECT_TIMEOUT,
            "command_timeout": POSTGRES_COMMAND_TIMEOUT,
        },
    )


def _configure_sqlite(engine: AsyncEngine, *, enforce_foreign_keys: bool) -> None:
    pragmas = (
        f"PRAGMA foreign_keys={'ON' if enforce_foreign_keys else 'OFF'}",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        # WAL lets the CLI tools write while the service reads.
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
    )

    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # The sqlite3 driver's legacy mode issues BEGIN lazily (not before SELECT, DDL or
        # SAVEPOINT), which breaks savepoints and transactional DDL; we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
