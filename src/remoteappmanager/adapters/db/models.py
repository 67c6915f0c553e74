"""The SQL schema as SQLAlchemy typed models; rows never leave adapters/db."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from remoteappmanager.domain.audit import MAX_ACTOR_LENGTH, MAX_TARGET_LENGTH
from remoteappmanager.domain.models import MAX_IMAGE_LENGTH, MAX_NAME_LENGTH
from remoteappmanager.domain.naming import MAX_URL_ID_LENGTH
from remoteappmanager.ports.login_sessions import (
    MAX_LOGIN_SESSION_KEY_LENGTH,
    MAX_SEALED_TOKEN_LENGTH,
)

# Stable constraint names, so that alembic revisions can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MAPPING_ID_LENGTH = 32


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserRow(Base):
    __tablename__ = "user"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), nullable=False)


class ApplicationRow(Base):
    __tablename__ = "application"
    __table_args__ = (UniqueConstraint("image"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image: Mapped[str] = mapped_column(String(MAX_IMAGE_LENGTH), nullable=False)


class PolicyRow(Base):
    """Shared by every grant with the same content; never updated in place."""

    __tablename__ = "application_policy"
    __table_args__ = (
        CheckConstraint("volume_mode IN ('ro', 'rw')", name="volume_mode"),
        CheckConstraint(
            "(volume_source IS NULL AND volume_target IS NULL AND volume_mode IS NULL) OR "
            "(volume_source IS NOT NULL AND volume_target IS NOT NULL "
            "AND volume_mode IS NOT NULL)",
            name="volume_all_or_none",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_license: Mapped[str | None] = mapped_column(Text, nullable=True)
    allow_home: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    allow_view: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    allow_common: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    volume_source: Mapped[str | None] = mapped_column(Text, nullable=True)
    volume_target: Mapped[str | None] = mapped_column(Text, nullable=True)
    volume_mode: Mapped[str | None] = mapped_column(Text, nullable=True)
    allow_startup_data: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=false()
    )
    # Swarm placement constraints, sorted, one per line; NULL for none (so that policies
    # compare by plain column equality).
    placement: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Null: the deployment's default (limits) or none (timeouts).
    memory_limit_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpu_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    pids_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    idle_timeout_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_lifetime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AccountingRow(Base):
    """One grant; its primary key is the ``mapping_id`` users and the REST API see."""

    __tablename__ = "accounting"
    __table_args__ = (
        UniqueConstraint("user_id", "application_id", "application_policy_id"),
        # The listing order: a page of everyone's grants is read from it, not sorted.
        Index("ix_accounting_listing", "user_id", "application_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(MAPPING_ID_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    application_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("application.id", ondelete="CASCADE"), nullable=False
    )
    application_policy_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("application_policy.id", ondelete="CASCADE"), nullable=False
    )

    # raise_on_sql: every load is spelled out in the query that needs it, never implicit.
    user: Mapped[UserRow] = relationship(lazy="raise_on_sql")
    application: Mapped[ApplicationRow] = relationship(lazy="raise_on_sql")
    policy: Mapped[PolicyRow] = relationship(lazy="raise_on_sql")


class GroupGrantRow(Base):
    """One grant to a hub group; its members are the hub's to say, so the name is all we keep."""

    __tablename__ = "group_grant"
    __table_args__ = (UniqueConstraint("group_name", "application_id", "application_policy_id"),)

    id: Mapped[str] = mapped_column(String(MAPPING_ID_LENGTH), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), nullable=False)
    application_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("application.id", ondelete="CASCADE"), nullable=False
    )
    application_policy_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("application_policy.id", ondelete="CASCADE"), nullable=False
    )

    application: Mapped[ApplicationRow] = relationship(lazy="raise_on_sql")
    policy: Mapped[PolicyRow] = relationship(lazy="raise_on_sql")


class CatalogueVersionRow(Base):
    """A single row counting committed catalogue changes, bumped in the same transaction as
    each of them, so that every process can tell cheaply whether its caches are stale."""

    __tablename__ = "catalogue_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


CATALOGUE_VERSION_ID = 1

URL_ID_MAX_LENGTH = 64
STOP_REASON_LENGTH = 16


class SessionActivityRow(Base):
    """When a session last had client input, written in batches at a bounded rate."""

    __tablename__ = "session_activity"

    url_id: Mapped[str] = mapped_column(String(URL_ID_MAX_LENGTH), primary_key=True)
    last_input_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SessionStopRow(Base):
    """Why a session ended, kept for a while so that its user is told the next time they
    look."""

    __tablename__ = "session_stop"

    url_id: Mapped[str] = mapped_column(String(URL_ID_MAX_LENGTH), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), nullable=False, index=True)
    mapping_id: Mapped[str] = mapped_column(String(MAPPING_ID_LENGTH), nullable=False)
    reason: Mapped[str] = mapped_column(String(STOP_REASON_LENGTH), nullable=False)
    stopped_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )


class EventRow(Base):
    """One audit event. Times are naive UTC (SQLite keeps no zone); ``detail`` a JSON object.

    The indexes serve the admin listing: newest first overall, or for one actor or action.
    """

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_time_id", "time", "id"),
        Index("ix_event_actor_time_id", "actor", "time", "id"),
        Index("ix_event_action_time_id", "action", "time", "id"),
    )

    # SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere ids may outgrow 32 bits.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    time: Mapped[datetime] = mapped_column(DateTime(timezone=False), nullable=False)
    actor: Mapped[str] = mapped_column(String(MAX_ACTOR_LENGTH), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str] = mapped_column(String(MAX_TARGET_LENGTH), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON(), nullable=False)


class LoginSessionRow(Base):
    """A signed-in browser, found by a one-way key of its session id; the hub token is sealed
    with another key of that id. Ended rows stay until purged, for other replicas to notice.
    Times are seconds since the epoch."""

    __tablename__ = "login_session"

    key: Mapped[str] = mapped_column(String(MAX_LOGIN_SESSION_KEY_LENGTH), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), nullable=False, index=True)
    sealed_token: Mapped[bytes] = mapped_column(
        LargeBinary(MAX_SEALED_TOKEN_LENGTH), nullable=False
    )
    created: Mapped[float] = mapped_column(Double, nullable=False)
    last_seen: Mapped[float] = mapped_column(Double, nullable=False)
    ended_at: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)


class StartClaimRow(Base):
    """A start or stop of a grant's application under way in one process, until ``until``."""

    __tablename__ = "start_claim"

    user_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), primary_key=True)
    mapping_id: Mapped[str] = mapped_column(String(MAPPING_ID_LENGTH), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), nullable=False)
    until: Mapped[float] = mapped_column(Double, nullable=False)


class ShareControlRow(Base):
    """Who controls a shared session besides its owner (``ControlState``), at ``version``;
    ``requests`` lists the viewers who asked for control, oldest first."""

    __tablename__ = "share_control"

    url_id: Mapped[str] = mapped_column(String(MAX_URL_ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    controller: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH), nullable=True)
    owner_holds: Mapped[bool] = mapped_column(Boolean, nullable=False)
    everyone: Mapped[bool] = mapped_column(Boolean, nullable=False)
    requests: Mapped[list[str]] = mapped_column(JSON, nullable=False)


class SessionShareRow(Base):
    """One share of a running session; the session lives in the engine, so ``url_id`` is a
    plain column (the service deletes a session's shares when it stops it)."""

    __tablename__ = "session_share"
    __table_args__ = (
        UniqueConstraint("url_id", "kind", "subject"),
        CheckConstraint("kind IN ('user', 'group', 'link')", name="kind"),
        CheckConstraint("mode IN ('view', 'control')", name="mode"),
        CheckConstraint("(kind = 'link') = (subject = '')", name="subject_iff_named"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url_id: Mapped[str] = mapped_column(String(MAX_URL_ID_LENGTH), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    subject: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), nullable=False)
    mode: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


metadata = Base.metadata
