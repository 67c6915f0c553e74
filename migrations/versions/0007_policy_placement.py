"""Policy placement: Docker Swarm constraints a grant's tasks must be placed by.

One nullable text column on ``application_policy`` (the constraints sorted, one per line;
NULL for none). Existing policies get none, and keep their rows and grants.

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("application_policy") as batch:
        batch.add_column(sa.Column("placement", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("application_policy") as batch:
        batch.drop_column("placement")
