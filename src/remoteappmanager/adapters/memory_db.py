"""In-memory fakes of the repository ports and the unit of work, for fast service tests."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Self

from remoteappmanager.domain.errors import Exists, NotFound
from remoteappmanager.domain.models import Application, Grant, GroupGrant, Policy, User
from remoteappmanager.domain.sessions import StopRecord
from remoteappmanager.domain.shares import Share, ShareKind, ShareMode


@dataclass
class _Accounting:
    user_id: int
    application_id: int
    policy_id: int


@dataclass
class _GroupGrant:
    group: str
    application_id: int
    policy_id: int


_RowFilter = Callable[[_Accounting], bool]


@dataclass
class _Tables:
    users: dict[int, User] = field(default_factory=dict)
    applications: dict[int, Application] = field(default_factory=dict)
    policies: dict[int, Policy] = field(default_factory=dict)
    accounting: dict[str, _Accounting] = field(default_factory=dict)
    group_grants: dict[str, _GroupGrant] = field(default_factory=dict)
    inputs: dict[str, datetime] = field(default_factory=dict)
    stops: dict[str, StopRecord] = field(default_factory=dict)
    # Not part of the catalogue: changing shares leaves the catalogue version alone.
    shares: dict[int, Share] = field(default_factory=dict, compare=False)
    # Like database sequences (one per table), ids are never handed out twice, even after a
    # rollback: every copy of the tables shares this one dictionary.
    next_ids: dict[str, int] = field(default_factory=dict)

    def new_id(self, table: str) -> int:
        value = self.next_ids.get(table, 1)
        self.next_ids[table] = value + 1
        return value


class InMemoryDatabase:
    """Committed state shared by the units of work it makes.

    Each unit of work works on a private copy taken when it is entered and publishes it on
    ``commit()``; concurrent units of work are not isolated from each other's lost updates
    (the last commit wins), which the service tests do not rely on.
    """

    def __init__(self) -> None:
        self._tables = _Tables()
        self.commits = 0
        self.version = 0

    def unit_of_work(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    def snapshot(self) -> _Tables:
        tables = copy.deepcopy(self._tables)
        tables.next_ids = self._tables.next_ids
        return tables

    def publish(self, tables: _Tables) -> None:
        if _catalogue(tables) != _catalogue(self._tables):
            self.version += 1
        self._tables = copy.deepcopy(tables)
        self._tables.next_ids = tables.next_ids
        self.commits += 1


class InMemoryUserRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables

    async def add(self, name: str) -> User:
        if any(user.name == name for user in self._tables.users.values()):
            raise Exists(f"user {name!r} already exists")
        user = User(id=self._tables.new_id("user"), name=name)
        self._tables.users[user.id] = user
        return user

    async def get(self, user_id: int) -> User:
        try:
            return self._tables.users[user_id]
        except KeyError:
            raise NotFound(f"no user with id {user_id}") from None

    async def get_by_name(self, name: str) -> User:
        for user in self._tables.users.values():
            if user.name == name:
                return user
        raise NotFound(f"no user named {name!r}")

    async def list(self) -> Sequence[User]:
        return sorted(self._tables.users.values(), key=lambda user: user.id)

    async def page(
        self, *, contains: str | None = None, limit: int, offset: int = 0
    ) -> tuple[int, Sequence[User]]:
        wanted = None if contains is None else contains.casefold()
        matching = [
            user for user in await self.list() if wanted is None or wanted in user.name.casefold()
        ]
        return len(matching), matching[offset : offset + limit]

    async def remove(self, user_id: int) -> None:
        if self._tables.users.pop(user_id, None) is None:
            raise NotFound(f"no user with id {user_id}")
        _cascade(self._tables, lambda row: row.user_id == user_id)


class InMemoryApplicationRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables

    async def add(self, image: str) -> Application:
        if any(app.image == image for app in self._tables.applications.values()):
            raise Exists(f"application {image!r} already exists")
        application = Application(id=self._tables.new_id("application"), image=image)
        self._tables.applications[application.id] = application
        return application

    async def get(self, application_id: int) -> Application:
        try:
            return self._tables.applications[application_id]
        except KeyError:
            raise NotFound(f"no application with id {application_id}") from None

    async def get_by_image(self, image: str) -> Application:
        for application in self._tables.applications.values():
            if application.image == image:
                return application
        raise NotFound(f"no application for image {image!r}")

    async def list(self) -> Sequence[Application]:
        return sorted(self._tables.applications.values(), key=lambda app: app.id)

    async def remove(self, application_id: int) -> None:
        if self._tables.applications.pop(application_id, None) is None:
            raise NotFound(f"no application with id {application_id}")
        _cascade(self._tables, lambda row: row.application_id == application_id)
        self._tables.group_grants = {
            mapping_id: row
            for mapping_id, row in self._tables.group_grants.items()
            if row.application_id != application_id
        }


class InMemoryGrantRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables

    async def grant(self, user: User, application: Application, policy: Policy) -> Grant:
        if user.id not in self._tables.users:
            raise NotFound(f"no user with id {user.id}")
        if application.id not in self._tables.applications:
            raise NotFound(f"no application with id {application.id}")
        policy_id = self._policy_id(policy)
        for mapping_id, row in self._tables.accounting.items():
            if (row.user_id, row.application_id, row.policy_id) == (
                user.id,
                application.id,
                policy_id,
            ):
                return self._grant(mapping_id, row)
        mapping_id = secrets.token_hex(16)
        row = _Accounting(user.id, application.id, policy_id)
        self._tables.accounting[mapping_id] = row
        return self._grant(mapping_id, row)

    async def get(self, mapping_id: str) -> Grant:
        row = self._tables.accounting.get(mapping_id)
        if row is None:
            raise NotFound(f"no grant with mapping id {mapping_id!r}")
        return self._grant(mapping_id, row)

    async def list_all(self) -> Sequence[Grant]:
        return self._select(lambda row: True)

    async def policies_of(self, mapping_ids: Collection[str]) -> Mapping[str, Policy]:
        found: dict[str, Policy] = {}
        for mapping_id in mapping_ids:
            row = self._tables.accounting.get(mapping_id) or self._tables.group_grants.get(
                mapping_id
            )
            if row is not None:
                found[mapping_id] = self._tables.policies[row.policy_id]
        return found

    async def page_all(self, *, limit: int, offset: int = 0) -> tuple[int, Sequence[Grant]]:
        every = self._select(lambda row: True)
        return len(every), every[offset : offset + limit]

    async def list_for_user(self, user_id: int) -> Sequence[Grant]:
        return self._select(lambda row: row.user_id == user_id)

    async def list_for(self, user_id: int, application_id: int) -> Sequence[Grant]:
        return self._select(
            lambda row: row.user_id == user_id and row.application_id == application_id
        )

    async def revoke(self, mapping_id: str) -> None:
        if self._tables.accounting.pop(mapping_id, None) is None:
            raise NotFound(f"no grant with mapping id {mapping_id!r}")

    async def grant_group(self, group: str, application: Application, policy: Policy) -> GroupGrant:
        if application.id not in self._tables.applications:
            raise NotFound(f"no application with id {application.id}")
        policy_id = self._policy_id(policy)
        wanted = _GroupGrant(group, application.id, policy_id)
        for mapping_id, row in self._tables.group_grants.items():
            if row == wanted:
                return self._group_grant(mapping_id, row)
        mapping_id = secrets.token_hex(16)
        self._tables.group_grants[mapping_id] = wanted
        return self._group_grant(mapping_id, wanted)

    async def get_group(self, mapping_id: str) -> GroupGrant:
        row = self._tables.group_grants.get(mapping_id)
        if row is None:
            raise NotFound(f"no group grant with mapping id {mapping_id!r}")
        return self._group_grant(mapping_id, row)

    async def list_groups(self, groups: Collection[str] | None = None) -> Sequence[GroupGrant]:
        selected = [
            self._group_grant(mapping_id, row)
            for mapping_id, row in self._tables.group_grants.items()
            if groups is None or row.group in groups
        ]
        return sorted(
            selected, key=lambda grant: (grant.group, grant.application.id, grant.mapping_id)
        )

    async def revoke_group(self, mapping_id: str) -> GroupGrant:
        found = await self.get_group(mapping_id)
        del self._tables.group_grants[mapping_id]
        return found

    def _group_grant(self, mapping_id: str, row: _GroupGrant) -> GroupGrant:
        return GroupGrant(
            mapping_id=mapping_id,
            group=row.group,
            application=self._tables.applications[row.application_id],
            policy=self._tables.policies[row.policy_id],
        )

    def _policy_id(self, policy: Policy) -> int:
        for policy_id, stored in sorted(self._tables.policies.items()):
            if stored == policy:
                return policy_id
        policy_id = self._tables.new_id("application_policy")
        self._tables.policies[policy_id] = policy
        return policy_id

    def _grant(self, mapping_id: str, row: _Accounting) -> Grant:
        return Grant(
            mapping_id=mapping_id,
            user=self._tables.users[row.user_id],
            application=self._tables.applications[row.application_id],
            policy=self._tables.policies[row.policy_id],
        )

    def _select(self, keep: _RowFilter) -> list[Grant]:
        selected = [
            self._grant(mapping_id, row)
            for mapping_id, row in self._tables.accounting.items()
            if keep(row)
        ]
        return sorted(
            selected, key=lambda grant: (grant.user.id, grant.application.id, grant.mapping_id)
        )


class InMemorySessionRecordRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables

    async def record_inputs(self, inputs: Mapping[str, datetime]) -> None:
        for url_id, moment in inputs.items():
            stored = self._tables.inputs.get(url_id)
            if stored is None or stored < moment:
                self._tables.inputs[url_id] = moment

    async def last_inputs(self, url_ids: Collection[str]) -> dict[str, datetime]:
        return {
            url_id: self._tables.inputs[url_id]
            for url_id in url_ids
            if url_id in self._tables.inputs
        }

    async def record_stop(self, record: StopRecord) -> None:
        self._tables.inputs.pop(record.url_id, None)
        self._tables.stops[record.url_id] = record

    async def stop_of(self, url_id: str) -> StopRecord | None:
        return self._tables.stops.get(url_id)

    async def stops_for_user(self, user: str, since: datetime) -> Sequence[StopRecord]:
        mine = [
            record
            for record in self._tables.stops.values()
            if record.user == user and record.stopped_at >= since
        ]
        return sorted(mine, key=lambda record: (-record.stopped_at.timestamp(), record.url_id))

    async def prune(self, before: datetime) -> int:
        stops = [key for key, record in self._tables.stops.items() if record.stopped_at < before]
        inputs = [key for key, moment in self._tables.inputs.items() if moment < before]
        for key in stops:
            del self._tables.stops[key]
        for key in inputs:
            del self._tables.inputs[key]
        return len(stops) + len(inputs)


class InMemoryShareRepository:
    def __init__(self, tables: _Tables) -> None:
        self._tables = tables

    async def put(
        self, url_id: str, kind: ShareKind, subject: str, mode: ShareMode, created_at: datetime
    ) -> Share:
        for share in self._tables.shares.values():
            if (share.url_id, share.kind, share.subject) == (url_id, kind, subject):
                changed = replace(share, mode=mode)
                self._tables.shares[share.id] = changed
                return changed
        share = Share(
            id=self._tables.new_id("session_share"),
            url_id=url_id,
            kind=kind,
            subject=subject,
            mode=mode,
            created_at=created_at,
        )
        self._tables.shares[share.id] = share
        return share

    async def get(self, share_id: int) -> Share:
        try:
            return self._tables.shares[share_id]
        except KeyError:
            raise NotFound(f"no share with id {share_id}") from None

    async def list_for(self, url_id: str) -> Sequence[Share]:
        return sorted(
            (share for share in self._tables.shares.values() if share.url_id == url_id),
            key=lambda share: share.id,
        )

    async def remove(self, share_id: int) -> None:
        if self._tables.shares.pop(share_id, None) is None:
            raise NotFound(f"no share with id {share_id}")

    async def remove_all(self, url_id: str) -> int:
        doomed = [key for key, share in self._tables.shares.items() if share.url_id == url_id]
        for key in doomed:
            del self._tables.shares[key]
        return len(doomed)


class InMemoryUnitOfWork:
    """Works on a copy of the committed state; ``commit()`` publishes it."""

    def __init__(self, database: InMemoryDatabase) -> None:
        self._database = database
        self._tables: _Tables | None = None

    @property
    def users(self) -> InMemoryUserRepository:
        return InMemoryUserRepository(self._require_tables())

    @property
    def applications(self) -> InMemoryApplicationRepository:
        return InMemoryApplicationRepository(self._require_tables())

    @property
    def grants(self) -> InMemoryGrantRepository:
        return InMemoryGrantRepository(self._require_tables())

    @property
    def session_records(self) -> InMemorySessionRecordRepository:
        return InMemorySessionRecordRepository(self._require_tables())

    @property
    def shares(self) -> InMemoryShareRepository:
        return InMemoryShareRepository(self._require_tables())

    async def __aenter__(self) -> Self:
        self._tables = self._database.snapshot()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._tables = None

    async def commit(self) -> None:
        self._database.publish(self._require_tables())

    async def rollback(self) -> None:
        self._require_tables()
        self._tables = self._database.snapshot()

    async def catalogue_version(self) -> int:
        self._require_tables()
        return self._database.version

    def _require_tables(self) -> _Tables:
        if self._tables is None:
            raise RuntimeError("the unit of work is used outside 'async with'")
        return self._tables


def _catalogue(tables: _Tables) -> tuple[object, ...]:
    return (
        tables.users,
        tables.applications,
        tables.policies,
        tables.accounting,
        tables.group_grants,
    )


def _cascade(tables: _Tables, doomed: _RowFilter) -> int:
    """Delete the accounting rows matching ``doomed`` (ON DELETE CASCADE); returns how many."""
    victims = [mapping_id for mapping_id, row in tables.accounting.items() if doomed(row)]
    for mapping_id in victims:
        del tables.accounting[mapping_id]
    return len(victims)
