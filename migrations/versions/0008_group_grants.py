"""Grants to hub groups: a ``group_grant`` table beside ``accounting``.

A group grant names the hub group, the application and the shared policy; its id is a mapping
id as a user's grant's is. Existing rows are untouched.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "group_grant",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("group_name", sa.String(length=255), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("application_policy_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["application.id"],
            name=op.f("fk_group_grant_application_id_application"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["application_policy_id"],
            ["application_policy.id"],
            name=op.f("fk_group_grant_application_policy_id_application_policy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_grant")),
        sa.UniqueConstraint(
            "group_name",
            "application_id",
            "application_policy_id",
            name=op.f("uq_group_grant_group_name_application_id_application_policy_id"),
        ),
    )


def downgrade() -> None:
    op.drop_table("group_grant")
