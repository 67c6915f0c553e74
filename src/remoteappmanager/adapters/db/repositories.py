"""SQL implementations of the repository ports, the unit of work and the database handle."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import ColumnElement, Select, delete, event, func, literal, select, update
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute, joinedload

from remoteappmanager.adapters.db.access import SqlAccess, SqliteWriteGate
from remoteappmanager.adapters.db.engine import create_engine, describe, is_sqlite
from remoteappmanager.adapters.db.errors import translated_errors
from remoteappmanager.adapters.db.events import SqlEventStore
from remoteappmanager.adapters.db.models import (
    CATALOGUE_VERSION_ID,
    MAPPING_ID_LENGTH,
    AccountingRow,
    ApplicationRow,
    CatalogueVersionRow,
    GroupGrantRow,
    PolicyRow,
    SessionActivityRow,
    SessionShareRow,
    SessionStopRow,
    UserRow,
)
from remoteappmanager.adapters.observed import Observe
from remoteappmanager.domain.errors import Exists, NotFound
from remoteappmanager.domain.models import (
    Application,
    Grant,
    GroupGrant,
    Policy,
    User,
    Volume,
    VolumeMode,
)
from remoteappmanager.domain.sessions import StopReason, StopRecord
from remoteappmanager.domain.shares import Share, ShareKind, ShareMode

# How many mapping ids one policy lookup names (each appears twice among its parameters).
_POLICY_LOOKUP_CHUNK = 1000


def new_mapping_id() -> str:
    return secrets.token_hex(MAPPING_ID_LENGTH // 2)


# ------------------------------------------------------------------------ rows -> domain
def _user(row: UserRow) -> User:
    return User(id=row.id, name=row.name)


def _application(row: ApplicationRow) -> Application:
    return Application(id=row.id, image=row.image)


def _policy(row: PolicyRow) -> Policy:
    volume = None
    if row.volume_source is not None and row.volume_target is not None and row.volume_mode:
        volume = Volume(row.volume_source, row.volume_target, VolumeMode(row.volume_mode))
    return Policy(
        app_license=row.app_license,
        allow_home=row.allow_home,
        allow_view=row.allow_view,
        allow_common=row.allow_common,
        volume=volume,
        allow_startup_data=row.allow_startup_data,
        placement=tuple(row.placement.split("\n")) if row.placement else (),
        memory_limit_mb=row.memory_limit_mb,
        cpu_limit=row.cpu_limit,
        pids_limit=row.pids_limit,
        idle_timeout_s=row.idle_timeout_s,
        max_lifetime_s=row.max_lifetime_s,
    )


def _grant(row: AccountingRow) -> Grant:
    return Grant(
        mapping_id=row.id,
        user=_user(row.user),
        application=_application(row.application),
        policy=_policy(row.policy),
    )


def _share(row: SessionShareRow) -> Share:
    created = row.created_at
    if created.tzinfo is None:  # SQLite keeps no zone: the column is always written in UTC
        created = created.replace(tzinfo=UTC)
    return Share(
        id=row.id,
        url_id=row.url_id,
        kind=ShareKind(row.kind),
        subject=row.subject,
        mode=ShareMode(row.mode),
        created_at=created,
    )


def _group_grant(row: GroupGrantRow) -> GroupGrant:
    return GroupGrant(
        mapping_id=row.id,
        group=row.group_name,
        application=_application(row.application),
        policy=_policy(row.policy),
    )


def _policy_columns(policy: Policy) -> dict[str, Any]:
    # Constraints one per line; none is NULL, so that such policies compare equal.
    return {**policy.flat(), "placement": "\n".join(policy.placement) or None}


def _same(column: InstrumentedAttribute[Any], value: object) -> ColumnElement[bool]:
    # "= NULL" matches nothing: a policy without a licence must match a NULL column.
    return column.is_(None) if value is None else column == value


class _Writes:
    """Whether a unit of work wrote to the catalogue (its commit then bumps the version)."""

    __slots__ = ("happened",)

    def __init__(self) -> None:
        self.happened = False


# ------------------------------------------------------------------------ repositories
class SqlUserRepository:
    def __init__(self, session: AsyncSession, location: str, writes: _Writes) -> None:
        self._session = session
        self._location = location
        self._writes = writes

    async def add(self, name: str) -> User:
        self._writes.happened = True
        with translated_errors(self._location):
            if await self._find(name) is not None:
                raise Exists(f"user {name!r} already exists")
            row = UserRow(name=name)
            self._session.add(row)
            try:
                await self._session.flush()
            except IntegrityError:
                raise Exists(f"user {name!r} already exists") from None
            return _user(row)

    async def get(self, user_id: int) -> User:
        with translated_errors(self._location):
            row = await self._session.get(UserRow, user_id)
        if row is None:
            raise NotFound(f"no user with id {user_id}")
        return _user(row)

    async def get_by_name(self, name: str) -> User:
        with translated_errors(self._location):
            row = await self._find(name)
        if row is None:
            raise NotFound(f"no user named {name!r}")
        return _user(row)

    async def list(self) -> Sequence[User]:
        with translated_errors(self._location):
            rows = await self._session.scalars(select(UserRow).order_by(UserRow.id))
            return [_user(row) for row in rows]

    async def page(
        self, *, contains: str | None = None, limit: int, offset: int = 0
    ) -> tuple[int, Sequence[User]]:
        conditions = []
        if contains is not None:
            escaped = contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(UserRow.name.ilike(f"%{escaped}%", escape="\\"))
        with translated_errors(self._location):
            total = await self._session.scalar(
                select(func.count()).select_from(UserRow).where(*conditions)
            )
            rows = await self._session.execute(
                select(UserRow.id, UserRow.name)
                .where(*conditions)
                .order_by(UserRow.id)
                .limit(limit)
                .offset(offset)
            )
            return int(total or 0), [User(id=row.id, name=row.name) for row in rows]

    async def remove(self, user_id: int) -> None:
        self._writes.happened = True
        with translated_errors(self._location):
            result = await self._session.execute(
                delete(UserRow).where(UserRow.id == user_id).returning(UserRow.id)
            )
            removed = result.scalar_one_or_none()
        if removed is None:
            raise NotFound(f"no user with id {user_id}")

    async def _find(self, name: str) -> UserRow | None:
        row: UserRow | None = await self._session.scalar(
            select(UserRow).where(UserRow.name == name)
        )
        return row


class SqlApplicationRepository:
    def __init__(self, session: AsyncSession, location: str, writes: _Writes) -> None:
        self._session = session
        self._location = location
        self._writes = writes

    async def add(self, image: str) -> Application:
        self._writes.happened = True
        with translated_errors(self._location):
            if await self._find(image) is not None:
                raise Exists(f"application {image!r} already exists")
            row = ApplicationRow(image=image)
            self._session.add(row)
            try:
                await self._session.flush()
            except IntegrityError:
                raise Exists(f"application {image!r} already exists") from None
            return _application(row)

    async def get(self, application_id: int) -> Application:
        with translated_errors(self._location):
            row = await self._session.get(ApplicationRow, application_id)
        if row is None:
            raise NotFound(f"no application with id {application_id}")
        return _application(row)

    async def get_by_image(self, image: str) -> Application:
        with translated_errors(self._location):
            row = await self._find(image)
        if row is None:
            raise NotFound(f"no application for image {image!r}")
        return _application(row)

    async def list(self) -> Sequence[Application]:
        with translated_errors(self._location):
            rows = await self._session.scalars(select(ApplicationRow).order_by(ApplicationRow.id))
            return [_application(row) for row in rows]

    async def remove(self, application_id: int) -> None:
        self._writes.happened = True
        with translated_errors(self._location):
            result = await self._session.execute(
                delete(ApplicationRow)
                .where(ApplicationRow.id == application_id)
                .returning(ApplicationRow.id)
            )
            removed = result.scalar_one_or_none()
        if removed is None:
            raise NotFound(f"no application with id {application_id}")

    async def _find(self, image: str) -> ApplicationRow | None:
        row: ApplicationRow | None = await self._session.scalar(
            select(ApplicationRow).where(ApplicationRow.image == image)
        )
        return row


class SqlGrantRepository:
    def __init__(self, session: AsyncSession, location: str, writes: _Writes) -> None:
        self._session = session
        self._location = location
        self._writes = writes

    async def policies_of(self, mapping_ids: Collection[str]) -> Mapping[str, Policy]:
        wanted = sorted(set(mapping_ids))
        found: dict[str, Policy] = {}
        # Bounded, so that no driver meets more bound parameters than it takes.
        for start in range(0, len(wanted), _POLICY_LOOKUP_CHUNK):
            chunk = wanted[start : start + _POLICY_LOOKUP_CHUNK]
            granted = (
                select(
                    AccountingRow.id.label("mapping_id"),
                    AccountingRow.application_policy_id.label("policy_id"),
                    literal(0).label("to_group"),
                )
                .where(AccountingRow.id.in_(chunk))
                .union_all(
                    select(GroupGrantRow.id, GroupGrantRow.application_policy_id, literal(1)).where(
                        GroupGrantRow.id.in_(chunk)
                    )
                )
                .subquery()
            )
            with translated_errors(self._location):
                rows = await self._session.execute(
                    select(granted.c.mapping_id, PolicyRow)
                    .join(PolicyRow, PolicyRow.id == granted.c.policy_id)
                    # A user's grant read last wins over a group's with the same id.
                    .order_by(granted.c.to_group.desc())
                )
                for mapping_id, policy in rows:
                    found[mapping_id] = _policy(policy)
        return found

    async def grant(self, user: User, application: Application, policy: Policy) -> Grant:
        self._writes.happened = True
        with translated_errors(self._location):
            if await self._session.get(UserRow, user.id) is None:
                raise NotFound(f"no user with id {user.id}")
            if await self._session.get(ApplicationRow, application.id) is None:
                raise NotFound(f"no application with id {application.id}")
            policy_id = await self._policy_id(policy)
            existing = await self._find(user.id, application.id, policy_id)
            if existing is not None:
                return existing
            try:
                # A savepoint, so that losing a race with an identical grant leaves the
                # surrounding transaction usable and we can return the winner's row.
                async with self._session.begin_nested():
                    self._session.add(
                        AccountingRow(
                            id=new_mapping_id(),
                            user_id=user.id,
                            application_id=application.id,
                            application_policy_id=policy_id,
                        )
                    )
            except IntegrityError:
                pass
            granted = await self._find(user.id, application.id, policy_id)
            if granted is None:
                raise NotFound("the user or the application was removed meanwhile")
            return granted

    async def get(self, mapping_id: str) -> Grant:
        with translated_errors(self._location):
            row = await self._session.scalar(self._select().where(AccountingRow.id == mapping_id))
        if row is None:
            raise NotFound(f"no grant with mapping id {mapping_id!r}")
        return _grant(row)

    async def list_all(self) -> Sequence[Grant]:
        return await self._list(self._select())

    async def page_all(self, *, limit: int, offset: int = 0) -> tuple[int, Sequence[Grant]]:
        with translated_errors(self._location):
            total = await self._session.scalar(select(func.count()).select_from(AccountingRow))
            # The page's ids first, from the listing index alone; then only those rows with
            # their user, application and policy (joining first would sort every grant).
            ids = list(
                await self._session.scalars(
                    select(AccountingRow.id)
                    .order_by(AccountingRow.user_id, AccountingRow.application_id, AccountingRow.id)
                    .limit(limit)
                    .offset(offset)
                )
            )
        page = await self._list(self._select().where(AccountingRow.id.in_(ids))) if ids else []
        return int(total or 0), page

    async def list_for_user(self, user_id: int) -> Sequence[Grant]:
        return await self._list(self._select().where(AccountingRow.user_id == user_id))

    async def list_for(self, user_id: int, application_id: int) -> Sequence[Grant]:
        return await self._list(
            self._select().where(
                AccountingRow.user_id == user_id, AccountingRow.application_id == application_id
            )
        )

    async def revoke(self, mapping_id: str) -> None:
        self._writes.happened = True
        with translated_errors(self._location):
            result = await self._session.execute(
                delete(AccountingRow)
                .where(AccountingRow.id == mapping_id)
                .returning(AccountingRow.id)
            )
            removed = result.scalar_one_or_none()
        if removed is None:
            raise NotFound(f"no grant with mapping id {mapping_id!r}")

    async def grant_group(self, group: str, application: Application, policy: Policy) -> GroupGrant:
        self._writes.happened = True
        with translated_errors(self._location):
            if await self._session.get(ApplicationRow, application.id) is None:
                raise NotFound(f"no application with id {application.id}")
            policy_id = await self._policy_id(policy)
            existing = await self._find_group(group, application.id, policy_id)
            if existing is not None:
                return existing
            try:
                # A savepoint, as in ``grant``: an identical grant made meanwhile wins.
                async with self._session.begin_nested():
                    self._session.add(
                        GroupGrantRow(
                            id=new_mapping_id(),
                            group_name=group,
                            application_id=application.id,
                            application_policy_id=policy_id,
                        )
                    )
            except IntegrityError:
                pass
            granted = await self._find_group(group, application.id, policy_id)
            if granted is None:
                raise NotFound("the application was removed meanwhile")
            return granted

    async def get_group(self, mapping_id: str) -> GroupGrant:
        with translated_errors(self._location):
            row = await self._session.scalar(
                self._select_groups().where(GroupGrantRow.id == mapping_id)
            )
        if row is None:
            raise NotFound(f"no group grant with mapping id {mapping_id!r}")
        return _group_grant(row)

    async def list_groups(self, groups: Collection[str] | None = None) -> Sequence[GroupGrant]:
        query = self._select_groups()
        if groups is not None:
            if not groups:
                return []
            query = query.where(GroupGrantRow.group_name.in_(sorted(groups)))
        with translated_errors(self._location):
            rows = await self._session.scalars(
                query.order_by(
                    GroupGrantRow.group_name, GroupGrantRow.application_id, GroupGrantRow.id
                )
            )
            return [_group_grant(row) for row in rows]

    async def revoke_group(self, mapping_id: str) -> GroupGrant:
        self._writes.happened = True
        found = await self.get_group(mapping_id)
        with translated_errors(self._location):
            await self._session.execute(delete(GroupGrantRow).where(GroupGrantRow.id == mapping_id))
        return found

    # -- helpers
    @staticmethod
    def _select_groups() -> Select[GroupGrantRow]:
        return select(GroupGrantRow).options(
            joinedload(GroupGrantRow.application), joinedload(GroupGrantRow.policy)
        )

    async def _find_group(
        self, group: str, application_id: int, policy_id: int
    ) -> GroupGrant | None:
        row = await self._session.scalar(
            self._select_groups().where(
                GroupGrantRow.group_name == group,
                GroupGrantRow.application_id == application_id,
                GroupGrantRow.application_policy_id == policy_id,
            )
        )
        return None if row is None else _group_grant(row)

    @staticmethod
    def _select() -> Select[AccountingRow]:
        return select(AccountingRow).options(
            joinedload(AccountingRow.user),
            joinedload(AccountingRow.application),
            joinedload(AccountingRow.policy),
        )

    async def _list(
        self, query: Select[AccountingRow], *, limit: int | None = None, offset: int = 0
    ) -> Sequence[Grant]:
        ordered = query.order_by(
            AccountingRow.user_id, AccountingRow.application_id, AccountingRow.id
        )
        if limit is not None:
            ordered = ordered.limit(limit).offset(offset)
        with translated_errors(self._location):
            rows = await self._session.scalars(ordered)
            return [_grant(row) for row in rows]

    async def _find(self, user_id: int, application_id: int, policy_id: int) -> Grant | None:
        row = await self._session.scalar(
            self._select().where(
                AccountingRow.user_id == user_id,
                AccountingRow.application_id == application_id,
                AccountingRow.application_policy_id == policy_id,
            )
        )
        return None if row is None else _grant(row)

    async def _policy_id(self, policy: Policy) -> int:
        """The id of the policy row with this content, created if there is none."""
        columns = _policy_columns(policy)
        conditions = [_same(getattr(PolicyRow, name), value) for name, value in columns.items()]
        # Policies carry no unique constraint (NULLs never compare equal), so two concurrent
        # first grants may each create one; always picking the oldest makes them converge.
        found = await self._session.scalar(
            select(PolicyRow.id).where(*conditions).order_by(PolicyRow.id).limit(1)
        )
        if found is not None:
            return int(found)
        row = PolicyRow(**columns)
        self._session.add(row)
        await self._session.flush()
        return row.id


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _stop(row: SessionStopRow) -> StopRecord:
    return StopRecord(
        url_id=row.url_id,
        user=row.user_name,
        mapping_id=row.mapping_id,
        reason=StopReason(row.reason),
        stopped_at=_aware(row.stopped_at),
    )


class SqlSessionRecordRepository:
    """Session activity and stop reasons; never counted as catalogue writes."""

    def __init__(self, session: AsyncSession, location: str) -> None:
        self._session = session
        self._location = location

    async def record_inputs(self, inputs: Mapping[str, datetime]) -> None:
        if not inputs:
            return
        with translated_errors(self._location):
            stored = {
                row.url_id: row
                for row in await self._session.scalars(
                    select(SessionActivityRow).where(SessionActivityRow.url_id.in_(list(inputs)))
                )
            }
            for url_id, moment in inputs.items():
                row = stored.get(url_id)
                if row is None:
                    self._session.add(SessionActivityRow(url_id=url_id, last_input_at=moment))
                elif _aware(row.last_input_at) < moment:
                    row.last_input_at = moment
            await self._session.flush()

    async def last_inputs(self, url_ids: Collection[str]) -> dict[str, datetime]:
        if not url_ids:
            return {}
        with translated_errors(self._location):
            rows = await self._session.execute(
                select(SessionActivityRow.url_id, SessionActivityRow.last_input_at).where(
                    SessionActivityRow.url_id.in_(list(url_ids))
                )
            )
            return {url_id: _aware(moment) for url_id, moment in rows}

    async def record_stop(self, record: StopRecord) -> None:
        with translated_errors(self._location):
            await self._session.execute(
                delete(SessionActivityRow).where(SessionActivityRow.url_id == record.url_id)
            )
            row = await self._session.get(SessionStopRow, record.url_id)
            if row is None:
                row = SessionStopRow(url_id=record.url_id)
                self._session.add(row)
            row.user_name = record.user
            row.mapping_id = record.mapping_id
            row.reason = record.reason.value
            row.stopped_at = record.stopped_at
            await self._session.flush()

    async def stop_of(self, url_id: str) -> StopRecord | None:
        with translated_errors(self._location):
            row = await self._session.get(SessionStopRow, url_id)
        return None if row is None else _stop(row)

    async def stops_for_user(self, user: str, since: datetime) -> Sequence[StopRecord]:
        with translated_errors(self._location):
            rows = await self._session.scalars(
                select(SessionStopRow)
                .where(SessionStopRow.user_name == user, SessionStopRow.stopped_at >= since)
                .order_by(SessionStopRow.stopped_at.desc(), SessionStopRow.url_id)
            )
            return [_stop(row) for row in rows]

    async def prune(self, before: datetime) -> int:
        with translated_errors(self._location):
            stops = await self._session.execute(
                delete(SessionStopRow)
                .where(SessionStopRow.stopped_at < before)
                .returning(SessionStopRow.url_id)
            )
            inputs = await self._session.execute(
                delete(SessionActivityRow)
                .where(SessionActivityRow.last_input_at < before)
                .returning(SessionActivityRow.url_id)
            )
            return len(stops.all()) + len(inputs.all())


class SqlShareRepository:
    """Session shares; not catalogue writes, so they leave the catalogue version alone."""

    def __init__(self, session: AsyncSession, location: str) -> None:
        self._session = session
        self._location = location

    async def put(
        self, url_id: str, kind: ShareKind, subject: str, mode: ShareMode, created_at: datetime
    ) -> Share:
        with translated_errors(self._location):
            row = await self._session.scalar(
                select(SessionShareRow).where(
                    SessionShareRow.url_id == url_id,
                    SessionShareRow.kind == kind.value,
                    SessionShareRow.subject == subject,
                )
            )
            if row is None:
                row = SessionShareRow(
                    url_id=url_id,
                    kind=kind.value,
                    subject=subject,
                    mode=mode.value,
                    created_at=created_at.astimezone(UTC),
                )
                self._session.add(row)
            else:
                row.mode = mode.value
            try:
                await self._session.flush()
            except IntegrityError:
                raise Exists("this session was just shared with them by another request") from None
            return _share(row)

    async def get(self, share_id: int) -> Share:
        with translated_errors(self._location):
            row = await self._session.get(SessionShareRow, share_id)
        if row is None:
            raise NotFound(f"no share with id {share_id}")
        return _share(row)

    async def list_for(self, url_id: str) -> Sequence[Share]:
        with translated_errors(self._location):
            rows = await self._session.scalars(
                select(SessionShareRow)
                .where(SessionShareRow.url_id == url_id)
                .order_by(SessionShareRow.id)
            )
            return [_share(row) for row in rows]

    async def remove(self, share_id: int) -> None:
        with translated_errors(self._location):
            removed = await self._session.execute(
                delete(SessionShareRow)
                .where(SessionShareRow.id == share_id)
                .returning(SessionShareRow.id)
            )
            if removed.scalar_one_or_none() is None:
                raise NotFound(f"no share with id {share_id}")

    async def remove_all(self, url_id: str) -> int:
        with translated_errors(self._location):
            removed = await self._session.execute(
                delete(SessionShareRow)
                .where(SessionShareRow.url_id == url_id)
                .returning(SessionShareRow.id)
            )
            return len(removed.all())


# ------------------------------------------------------------------------ unit of work
class SqlUnitOfWork:
    """One ``AsyncSession`` and one transaction; rolled back on exit unless committed.

    A commit after a write bumps the catalogue version in the same transaction.
    """

    def __init__(self, access: SqlAccess) -> None:
        self._db = access
        self._location = access.location
        self._writes = _Writes()
        self._session: AsyncSession | None = None
        self._users: SqlUserRepository | None = None
        self._applications: SqlApplicationRepository | None = None
        self._grants: SqlGrantRepository | None = None
        self._session_records: SqlSessionRecordRepository | None = None
        self._shares: SqlShareRepository | None = None

    @property
    def users(self) -> SqlUserRepository:
        if self._users is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._users

    @property
    def applications(self) -> SqlApplicationRepository:
        if self._applications is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._applications

    @property
    def grants(self) -> SqlGrantRepository:
        if self._grants is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._grants

    @property
    def session_records(self) -> SqlSessionRecordRepository:
        if self._session_records is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._session_records

    @property
    def shares(self) -> SqlShareRepository:
        if self._shares is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._shares

    async def __aenter__(self) -> Self:
        await self._db.enter_unit()
        session = self._db.sessions()
        self._session = session
        self._writes = _Writes()
        self._users = SqlUserRepository(session, self._location, self._writes)
        self._applications = SqlApplicationRepository(session, self._location, self._writes)
        self._grants = SqlGrantRepository(session, self._location, self._writes)
        self._session_records = SqlSessionRecordRepository(session, self._location)
        self._shares = SqlShareRepository(session, self._location)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._session
        self._session = self._users = self._applications = self._grants = None
        self._session_records = None
        self._shares = None
        if session is None:
            return
        try:
            with translated_errors(self._location):
                await session.rollback()
        except Exception:
            # The original error (if any) matters more than a failed rollback; the session is
            # closed below either way, which releases the connection.
            if exc is None:
                raise
        finally:
            await session.close()
            await self._db.leave_unit()

    async def commit(self) -> None:
        session = self._require_session()
        with translated_errors(self._location):
            if self._writes.happened:
                await self._bump_version(session)
            await session.commit()
        self._writes.happened = False

    async def rollback(self) -> None:
        with translated_errors(self._location):
            await self._require_session().rollback()
        self._writes.happened = False

    async def catalogue_version(self) -> int:
        with translated_errors(self._location):
            version = await self._require_session().scalar(
                select(CatalogueVersionRow.version).where(
                    CatalogueVersionRow.id == CATALOGUE_VERSION_ID
                )
            )
        return int(version or 0)

    @staticmethod
    async def _bump_version(session: AsyncSession) -> None:
        bumped = await session.execute(
            update(CatalogueVersionRow)
            .where(CatalogueVersionRow.id == CATALOGUE_VERSION_ID)
            .values(version=CatalogueVersionRow.version + 1)
            .returning(CatalogueVersionRow.version)
        )
        if bumped.scalar_one_or_none() is None:
            # The row was deleted by hand: put it back rather than lose every later change.
            session.add(CatalogueVersionRow(id=CATALOGUE_VERSION_ID, version=1))
            await session.flush()

    def _require_session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._session


class SqlDatabase:
    """An engine, its session factory and the units of work built on them.

    With ``observe``, every SQL statement reports ``("database", verb, seconds, outcome)``
    (``adapters.observed.Observe``): SQLAlchemy's cursor events say when it starts and ends.
    """

    def __init__(self, url: str | URL, *, observe: Observe | None = None) -> None:
        self.location = describe(url)
        self.engine = create_engine(url)
        if observe is not None:
            _time_statements(self.engine.sync_engine, observe)
        self._access = SqlAccess(
            async_sessionmaker(self.engine, expire_on_commit=False),
            self.location,
            SqliteWriteGate() if is_sqlite(url) else None,
        )

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._access)

    def events(self) -> SqlEventStore:
        """The audit trail in this database."""
        return SqlEventStore(self._access)

    async def ping(self) -> None:
        """Reach the database once; ``Unavailable`` with the reason if it cannot be used."""
        with translated_errors(self.location):
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        await self.engine.dispose()


_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK"})


def _verb(statement: str) -> str:
    word = statement.lstrip()[:8].split(None, 1)
    verb = word[0].upper() if word else ""
    return verb.lower() if verb in _VERBS else "other"


def _time_statements(engine: Engine, observe: Observe) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def started(
        conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        conn.info.setdefault("remoteapp_started", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def ended(
        conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        began = conn.info["remoteapp_started"].pop()
        observe("database", _verb(statement), time.perf_counter() - began, "ok")

    @event.listens_for(engine, "handle_error")
    def failed(context: Any) -> None:
        stack = context.connection.info.get("remoteapp_started") if context.connection else None
        if stack:
            began = stack.pop()
            verb = _verb(context.statement or "")
            observe("database", verb, time.perf_counter() - began, "failed")
