"""Resource limits and timeouts on policies; session activity and stop reasons.

Policies get ``memory_limit_mb``, ``cpu_limit``, ``pids_limit`` (null: the deployment's
default) and ``idle_timeout_s``, ``max_lifetime_s`` (null or 0: none); existing policies keep
their rows and get nulls, so they behave as before. ``session_activity`` holds each session's
last client input and ``session_stop`` why recent sessions ended.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POLICY_COLUMNS = (
    ("memory_limit_mb", sa.Integer()),
    ("cpu_limit", sa.Float()),
    ("pids_limit", sa.Integer()),
    ("idle_timeout_s", sa.Integer()),
    ("max_lifetime_s", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("application_policy") as batch:
        for name, kind in _POLICY_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "session_activity",
        sa.Column("url_id", sa.String(length=64), nullable=False),
        sa.Column("last_input_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url_id", name=op.f("pk_session_activity")),
    )
    op.create_table(
        "session_stop",
        sa.Column("url_id", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("mapping_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url_id", name=op.f("pk_session_stop")),
    )
    op.create_index(op.f("ix_session_stop_user_name"), "session_stop", ["user_name"], unique=False)
    op.create_index(
        op.f("ix_session_stop_stopped_at"), "session_stop", ["stopped_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_session_stop_stopped_at"), table_name="session_stop")
    op.drop_index(op.f("ix_session_stop_user_name"), table_name="session_stop")
    op.drop_table("session_stop")
    op.drop_table("session_activity")
    with op.batch_alter_table("application_policy") as batch:
        for name, _kind in reversed(_POLICY_COLUMNS):
            batch.drop_column(name)
