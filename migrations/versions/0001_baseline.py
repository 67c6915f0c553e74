"""Baseline: the catalogue schema (users, applications, policies, accounting).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
        sa.UniqueConstraint("name", name=op.f("uq_user_name")),
    )
    op.create_table(
        "application",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application")),
        sa.UniqueConstraint("image", name=op.f("uq_application_image")),
    )
    op.create_table(
        "application_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_license", sa.Text(), nullable=True),
        sa.Column("allow_home", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("allow_view", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("allow_common", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("volume_source", sa.Text(), nullable=True),
        sa.Column("volume_target", sa.Text(), nullable=True),
        sa.Column("volume_mode", sa.Text(), nullable=True),
        sa.Column("allow_startup_data", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint(
            "volume_mode IN ('ro', 'rw')", name=op.f("ck_application_policy_volume_mode")
        ),
        sa.CheckConstraint(
            "(volume_source IS NULL AND volume_target IS NULL AND volume_mode IS NULL) OR "
            "(volume_source IS NOT NULL AND volume_target IS NOT NULL "
            "AND volume_mode IS NOT NULL)",
            name=op.f("ck_application_policy_volume_all_or_none"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application_policy")),
    )
    op.create_table(
        "accounting",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("application_policy_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_accounting_user_id_user"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["application.id"],
            name=op.f("fk_accounting_application_id_application"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["application_policy_id"],
            ["application_policy.id"],
            name=op.f("fk_accounting_application_policy_id_application_policy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounting")),
        sa.UniqueConstraint(
            "user_id",
            "application_id",
            "application_policy_id",
            name=op.f("uq_accounting_user_id_application_id_application_policy_id"),
        ),
    )


def downgrade() -> None:
    op.drop_table("accounting")
    op.drop_table("application_policy")
    op.drop_table("application")
    op.drop_table("user")
