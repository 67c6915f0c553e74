"""Who controls a shared session, in the database, so that every replica's gate agrees.

``share_control`` holds, per session, the viewer control was handed to, whether the owner
took it back, whether everyone may control, the viewers asking for it, and a version that
each change increases (a change is written only over the version it was made from). It
starts empty: control states kept in a process's memory end with it, as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "share_control",
        sa.Column("url_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("controller", sa.String(length=255), nullable=True),
        sa.Column("owner_holds", sa.Boolean(), nullable=False),
        sa.Column("everyone", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("url_id", name=op.f("pk_share_control")),
    )


def downgrade() -> None:
    op.drop_table("share_control")
