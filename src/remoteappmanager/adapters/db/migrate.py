"""Schema migrations driven from code: alembic configured here, no alembic.ini needed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from remoteappmanager.adapters.db.engine import create_engine, describe, parse_url
from remoteappmanager.adapters.db.errors import translated_errors
from remoteappmanager.adapters.db.models import metadata
from remoteappmanager.domain.errors import Exists, Unavailable

VERSION_TABLE = "alembic_version"
OUR_TABLES = frozenset(metadata.tables) | {VERSION_TABLE}

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a database stands against the migrations shipped with this code."""

    location: str
    head: str
    current: str | None
    """The recorded revision(s), comma-separated; None when nothing is recorded."""
    exists: bool = True
    """False for a SQLite file that does not exist (it was not created by looking)."""
    known: bool = True
    """False when the recorded revision is not one of ours (a newer release wrote it)."""

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def scripts_dir() -> Path:
    """The alembic scripts: the copy packaged in the wheel, else the source checkout's."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package / "migrations", package.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"the database migrations are missing from this installation ({package})")


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An alembic configuration built in code; ``connection`` is used instead of ``url``."""
    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    # ConfigParser interpolation: a '%' in the URL (an escaped password) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["configure_logging"] = False
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head() -> str:
    """The newest revision shipped with this code."""
    return ",".join(sorted(_scripts().get_heads()))


async def upgrade(url: str, revision: str = "head") -> SchemaStatus:
    """Bring the schema to ``revision`` (creating a SQLite file if needed), atomically."""
    await _run(url, lambda connection: command.upgrade(alembic_config(url, connection), revision))
    return await status(url)


async def downgrade(url: str, revision: str) -> SchemaStatus:
    """Take the schema back to ``revision`` (``base``: no tables at all), atomically."""
    await _run(url, lambda connection: command.downgrade(alembic_config(url, connection), revision))
    return await status(url)


async def current(url: str) -> str | None:
    """The revision the database records; None for an empty (or missing) database."""
    return (await status(url)).current


async def check(url: str) -> bool:
    """Whether the database's schema is exactly at ``head()``."""
    return (await status(url)).at_head


async def status(url: str) -> SchemaStatus:
    """Where the database stands; looks without creating a missing SQLite file."""
    location, newest = describe(url), head()
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.exists():
        return SchemaStatus(location=location, head=newest, current=None, exists=False)
    recorded = await _run(url, _recorded_revision)
    known = recorded is None or all(_is_ours(revision) for revision in recorded.split(","))
    return SchemaStatus(location=location, head=newest, current=recorded, known=known)


async def initialise(url: str) -> SchemaStatus:
    """Create the schema on a new database; ``Exists`` if it already holds one.

    A SQLite file that exists and holds any table, or a PostgreSQL database holding one of
    our tables, is left alone. If creation fails, a SQLite file made by this call is removed.
    """
    sqlite_file = _sqlite_file(url)
    created = sqlite_file is not None and not sqlite_file.exists()
    if not created:
        tables = await _run(url, lambda connection: set(inspect(connection).get_table_names()))
        clash = tables if sqlite_file is not None else tables & OUR_TABLES
        if clash:
            raise Exists(
                f"the {describe(url)} already holds tables ({', '.join(sorted(clash))}); "
                "refusing to overwrite it"
            )
    try:
        return await upgrade(url)
    except BaseException:
        if created and sqlite_file is not None:
            for leftover in (sqlite_file, *_sqlite_companions(sqlite_file)):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        raise


def _is_ours(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except AlembicError:
        return False


def _recorded_revision(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    return ",".join(sorted(heads)) if heads else None


async def _run(url: str, work: Callable[[Connection], _T]) -> _T:
    """Run ``work`` in one transaction on a migration connection; committed if it returns."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.absolute().parent.is_dir():
        # Said here rather than by a failed connect, which aiosqlite reports only vaguely.
        raise Unavailable(
            f"cannot use the {describe(url)}: the directory {sqlite_file.parent} does not exist"
        )
    engine = create_engine(url, enforce_foreign_keys=False)
    try:
        with translated_errors(describe(url)):
            async with engine.begin() as connection:
                return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in {None, "", ":memory:"}:
        return None
    return Path(str(parsed.database))


def _sqlite_companions(path: Path) -> tuple[Path, ...]:
    return tuple(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))
