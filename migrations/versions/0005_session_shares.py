"""Session shares: who else may enter a running session, and whether their input counts.

A share names one hub user, one hub group, or (``link``) anyone signed in who holds the
session's address; ``mode`` is ``view`` or ``control``. Sessions live in the engine, so a
share refers to its session by ``url_id``. No existing rows change.

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_share",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('user', 'group', 'link')", name=op.f("ck_session_share_kind")),
        sa.CheckConstraint("mode IN ('view', 'control')", name=op.f("ck_session_share_mode")),
        sa.CheckConstraint(
            "(kind = 'link') = (subject = '')", name=op.f("ck_session_share_subject_iff_named")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_share")),
        sa.UniqueConstraint(
            "url_id", "kind", "subject", name=op.f("uq_session_share_url_id_kind_subject")
        ),
    )


def downgrade() -> None:
    op.drop_table("session_share")
