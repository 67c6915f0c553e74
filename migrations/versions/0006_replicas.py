"""Login sessions and start claims in the database, so that several replicas share them.

``login_session`` holds signed-in browsers: a one-way key of the session id (never the id the
cookie carries), the user, the hub token sealed with another key of the id, creation and
last use, and when it ended (kept until purged, for other replicas to notice the end).
``start_claim`` marks a start or stop of a grant's application under way in one process. Both
tables start empty: sessions that lived in a process's memory end with it, as before.

Revision ID: 0006
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_session",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("sealed_token", sa.LargeBinary(length=1024), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_session")),
    )
    op.create_index(op.f("ix_login_session_user_name"), "login_session", ["user_name"])
    op.create_index(op.f("ix_login_session_ended_at"), "login_session", ["ended_at"])
    op.create_table(
        "start_claim",
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("mapping_id", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("user_name", "mapping_id", name=op.f("pk_start_claim")),
    )


def downgrade() -> None:
    op.drop_table("start_claim")
    op.drop_index(op.f("ix_login_session_ended_at"), table_name="login_session")
    op.drop_index(op.f("ix_login_session_user_name"), table_name="login_session")
    op.drop_table("login_session")
