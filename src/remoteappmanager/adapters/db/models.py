"""The SQL schema as SQLAlchemy typed models; rows never leave adapters/db."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from remoteappmanager.domain.models import MAX_IMAGE_LENGTH, MAX_NAME_LENGTH
from remoteappmanager.domain.naming import MAX_URL_ID_LENGTH

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


class AccountingRow(Base):
    """One grant; its primary key is the ``mapping_id`` users and the REST API see."""

    __tablename__ = "accounting"
    __table_args__ = (UniqueConstraint("user_id", "application_id", "application_policy_id"),)

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


class CatalogueVersionRow(Base):
    """A single row counting committed catalogue changes, bumped in the same transaction as
    each of them, so that every process can tell cheaply whether its caches are stale."""

    __tablename__ = "catalogue_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


CATALOGUE_VERSION_ID = 1


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
