"""Database helpers for the tests: raw SQL access and a copy of the migrations one step ahead."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import text

from remoteappmanager.adapters.db.engine import create_engine
from remoteappmanager.adapters.db.migrate import head, scripts_dir

# The newest shipped revision, and the one a copy of the migrations one step ahead adds.
CURRENT_REVISION = head()
NEXT_REVISION = f"{int(CURRENT_REVISION) + 1:04d}"

_NEXT_REVISION_SCRIPT = f'''"""A later revision: the code is one step ahead of the database."""

import sqlalchemy as sa
from alembic import op

revision = "{NEXT_REVISION}"
down_revision = "{CURRENT_REVISION}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("scratch", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("scratch")
'''


def migrations_one_step_ahead(directory: Path) -> Path:
    """A copy of the shipped migrations plus ``NEXT_REVISION``; returns its scripts directory."""
    target = directory / "migrations"
    shutil.copytree(scripts_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "versions" / f"{NEXT_REVISION}_scratch.py").write_text(_NEXT_REVISION_SCRIPT)
    return target


async def execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run raw SQL in one committed transaction (foreign keys on); the last statement's rows."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = await connection.execute(text(statement))
                rows = [tuple(row) for row in result.fetchall()] if result.returns_rows else []
            return rows
    finally:
        await engine.dispose()


def cli_url(async_url: str) -> str:
    """How an operator would type the database: a plain path, or a plain postgresql:// URL."""
    if async_url.startswith("sqlite+aiosqlite:///"):
        return async_url.removeprefix("sqlite+aiosqlite:///")
    return async_url.replace("postgresql+asyncpg://", "postgresql://", 1)
