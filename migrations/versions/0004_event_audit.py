"""Audit trail: the ``event`` table (who did what to what, when); an index for grant pages.

Nothing existing changes; the table starts empty. Its indexes serve the admin listing:
newest first overall, or for one actor or one action. ``accounting`` gets an index in its
listing order, so that a page of everyone's grants is read, not sorted.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("time", sa.DateTime(timezone=False), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
    )
    op.create_index("ix_event_time_id", "event", ["time", "id"])
    op.create_index("ix_event_actor_time_id", "event", ["actor", "time", "id"])
    op.create_index("ix_event_action_time_id", "event", ["action", "time", "id"])
    op.create_index("ix_accounting_listing", "accounting", ["user_id", "application_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_accounting_listing", table_name="accounting")
    op.drop_index("ix_event_action_time_id", table_name="event")
    op.drop_index("ix_event_actor_time_id", table_name="event")
    op.drop_index("ix_event_time_id", table_name="event")
    op.drop_table("event")
