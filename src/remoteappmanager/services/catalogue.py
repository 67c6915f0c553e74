"""Catalogue use cases: users, applications and the grants between them.

Each use case runs in its own unit of work and commits only when it succeeded: a failure
changes nothing. Users may be named by id (``int``) or hub name (``str``), applications by id
or image name. Errors: ``InvalidRequest`` for a malformed name, ``NotFound`` for an unknown
user, application or grant, ``Exists`` for a duplicate, ``Unavailable`` when the database (or,
for ``verify_image``, the Docker engine) cannot be reached.

A grant whose policy mounts a host folder is checked against the volume rules (``VolumeGuard``)
before anything is written: outside the operator's roots, a system path, or a symbolic link
that leads out of the roots is ``Forbidden``. Without a guard no volume may be granted.

Every change that was committed is recorded in the audit trail for ``by`` (its actor), with
details that name what changed and never a policy's licence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, overload

from remoteappmanager.domain.audit import AuditAction
from remoteappmanager.domain.errors import Forbidden, NotFound
from remoteappmanager.domain.models import (
    Application,
    Grant,
    GroupGrant,
    Policy,
    User,
    Volume,
    validate_group_name,
    validate_image_name,
    validate_user_name,
)
from remoteappmanager.domain.volumes import VolumeRules
from remoteappmanager.ports.repositories import UnitOfWork, UnitOfWorkFactory
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.ports.workspaces import HostPaths
from remoteappmanager.services.audit import UNRECORDED, Attribution

UserRef = int | str
"""A user's id, or their hub name."""
ApplicationRef = int | str
"""An application's id, or its image name."""


@dataclass(frozen=True, slots=True)
class HubGroup:
    """A hub group as the subject of a grant (its members get it while they are in it)."""

    name: str


Subject = UserRef | HubGroup
"""Whom a grant is to: a user (``UserRef``) or every member of a hub group."""

ALL_POLICIES: Literal["all"] = "all"
# Row ids are 32-bit in the database: a larger id names nothing, and is never sent to a driver
# that would fail on it instead of finding nothing.
MAX_ROW_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class UserGrants:
    user: User
    grants: tuple[Grant, ...]


class VolumeGuard:
    """The volume rules applied to the host's real paths (symbolic links resolved).

    ``check`` is asked when a volume is granted and again when a container is about to mount
    it, since a grant may predate the rules and a link may change after it was granted.
    """

    def __init__(self, rules: VolumeRules, host_paths: HostPaths) -> None:
        self.rules = rules
        self._host_paths = host_paths

    async def check(self, volume: Volume, *, forbidden: tuple[str, ...] = ()) -> Volume:
        """The volume to mount (its source resolved); ``Forbidden`` if it may not be.

        ``forbidden`` adds host paths known only now (the engine's data directory).
        """
        rules = self.rules.with_forbidden(*forbidden) if forbidden else self.rules
        rules.check(volume)
        source = await self._host_paths.resolve(volume.source)
        roots = [(await self._host_paths.resolve(root)).path for root in rules.roots]
        return rules.check_resolved(volume, source, (*rules.roots, *roots))


async def check_policy_volume(volumes: VolumeGuard | None, policy: Policy) -> None:
    """``Forbidden`` unless the policy's volume (if any) may be granted (``InvalidRequest``
    for a path that is not an absolute, clean path)."""
    if policy.volume is None:
        return
    if volumes is None:
        raise Forbidden(
            f"volume source {policy.volume.source} cannot be granted: no host folder may be "
            "mounted here"
        )
    await volumes.check(policy.volume)


# ------------------------------------------------------------------------------ users
async def create_user(uow: UnitOfWorkFactory, name: str, *, by: Attribution = UNRECORDED) -> User:
    """Add a user by hub name; ``Exists`` if there is one already."""
    name = validate_user_name(name)
    async with uow() as work:
        user = await work.users.add(name)
        await work.commit()
    by.record(AuditAction.USER_CREATE, user.name, {"user_id": user.id})
    return user


async def remove_user(
    uow: UnitOfWorkFactory, user: UserRef, *, by: Attribution = UNRECORDED
) -> None:
    """Remove a user and every grant they hold."""
    async with uow() as work:
        found = await _user(work, user)
        await work.users.remove(found.id)
        await work.commit()
    by.record(AuditAction.USER_DELETE, found.name, {"user_id": found.id})


async def get_user(uow: UnitOfWorkFactory, user: UserRef) -> User:
    """One user by id or name."""
    async with uow() as work:
        return await _user(work, user)


async def list_users(uow: UnitOfWorkFactory) -> list[User]:
    """Every user, in creation order."""
    async with uow() as work:
        return list(await work.users.list())


async def page_users(
    uow: UnitOfWorkFactory, *, contains: str | None, limit: int, offset: int
) -> tuple[int, list[User]]:
    """How many users' names contain ``contains`` (every user when None), and one page of
    them in creation order."""
    async with uow() as work:
        total, users = await work.users.page(contains=contains, limit=limit, offset=offset)
    return total, list(users)


async def page_grants(
    uow: UnitOfWorkFactory, *, limit: int, offset: int
) -> tuple[int, list[Grant]]:
    """How many grants there are, and one page of them (by user, application, mapping id)."""
    async with uow() as work:
        total, grants = await work.grants.page_all(limit=limit, offset=offset)
    return total, list(grants)


async def list_users_with_grants(uow: UnitOfWorkFactory) -> list[UserGrants]:
    """Every user with their grants, read in one transaction so that both agree."""
    async with uow() as work:
        users = await work.users.list()
        grants = await work.grants.list_all()
    by_user: dict[int, list[Grant]] = {user.id: [] for user in users}
    for grant in grants:
        by_user.setdefault(grant.user.id, []).append(grant)
    return [UserGrants(user, tuple(by_user[user.id])) for user in users]


# ------------------------------------------------------------------------------ applications
async def verify_image(runtime: ContainerRuntime, image: str) -> None:
    """Check that the Docker engine holds ``image``; ``NotFound`` if not.

    ``Unavailable`` (from the runtime) when the engine cannot be asked.
    """
    image = validate_image_name(image)
    try:
        await runtime.inspect_image(image)
    except NotFound:
        raise NotFound(
            f"image {image!r} is not on the Docker engine (pull or build it first)"
        ) from None


async def create_application(
    uow: UnitOfWorkFactory, image: str, *, by: Attribution = UNRECORDED
) -> Application:
    """Register a Docker image; ``Exists`` if it is registered already."""
    image = validate_image_name(image)
    async with uow() as work:
        application = await work.applications.add(image)
        await work.commit()
    by.record(AuditAction.APP_CREATE, application.image, {"application_id": application.id})
    return application


async def remove_application(
    uow: UnitOfWorkFactory, application: ApplicationRef, *, by: Attribution = UNRECORDED
) -> None:
    """Remove an application and every grant of it."""
    async with uow() as work:
        found = await _application(work, application)
        await work.applications.remove(found.id)
        await work.commit()
    by.record(AuditAction.APP_DELETE, found.image, {"application_id": found.id})


async def get_application(uow: UnitOfWorkFactory, application: ApplicationRef) -> Application:
    """One application by id or image name."""
    async with uow() as work:
        return await _application(work, application)


async def list_applications(uow: UnitOfWorkFactory) -> list[Application]:
    """Every application, in creation order."""
    async with uow() as work:
        return list(await work.applications.list())


# ------------------------------------------------------------------------------ grants
@overload
async def grant_access(
    uow: UnitOfWorkFactory,
    application: ApplicationRef,
    subject: UserRef,
    policy: Policy,
    *,
    volumes: VolumeGuard | None = None,
    by: Attribution = UNRECORDED,
) -> Grant: ...


@overload
async def grant_access(
    uow: UnitOfWorkFactory,
    application: ApplicationRef,
    subject: HubGroup,
    policy: Policy,
    *,
    volumes: VolumeGuard | None = None,
    by: Attribution = UNRECORDED,
) -> GroupGrant: ...


@overload
async def grant_access(
    uow: UnitOfWorkFactory,
    application: ApplicationRef,
    subject: Subject,
    policy: Policy,
    *,
    volumes: VolumeGuard | None = None,
    by: Attribution = UNRECORDED,
) -> Grant | GroupGrant: ...


async def grant_access(
    uow: UnitOfWorkFactory,
    application: ApplicationRef,
    subject: Subject,
    policy: Policy,
    *,
    volumes: VolumeGuard | None = None,
    by: Attribution = UNRECORDED,
) -> Grant | GroupGrant:
    """Let ``subject`` (a user, or every member of a hub group) run ``application`` under
    ``policy``.

    Idempotent: granting the same policy again returns the same grant (same mapping id).
    ``InvalidRequest`` for a malformed group name, ``NotFound`` for an unknown user or
    application, ``Forbidden`` for a volume ``volumes`` refuses; nothing is written then.
    Whether a group exists is the hub's to say: a grant to a group nobody is in gives nobody
    anything.
    """
    subject = _validated(subject)
    await check_policy_volume(volumes, policy)
    granted: Grant | GroupGrant
    async with uow() as work:
        if isinstance(subject, HubGroup):
            found_application = await _application(work, application)
            granted = await work.grants.grant_group(subject.name, found_application, policy)
        else:
            found_user = await _user(work, subject)
            found_application = await _application(work, application)
            granted = await work.grants.grant(found_user, found_application, policy)
        await work.commit()
    by.record(AuditAction.GRANT, granted.mapping_id, grant_detail(granted))
    return granted


async def revoke_access(
    uow: UnitOfWorkFactory,
    application: ApplicationRef,
    subject: Subject,
    policy: Policy | Literal["all"],
    *,
    by: Attribution = UNRECORDED,
) -> int:
    """Withdraw the grant of ``application`` to ``subject`` (a user or a hub group) under
    ``policy``, or every policy's.

    Returns how many grants went. With one policy, ``NotFound`` if there was no such grant;
    with ``"all"``, revoking nothing is not an error.
    """
    subject = _validated(subject)
    held: list[Grant | GroupGrant]
    withdraw: Callable[[str], Awaitable[object]]
    async with uow() as work:
        if isinstance(subject, HubGroup):
            found_application = await _application(work, application)
            held = [
                granted
                for granted in await work.grants.list_groups({subject.name})
                if granted.application.id == found_application.id
            ]
            withdraw, holder = work.grants.revoke_group, f"group {subject.name!r}"
        else:
            found_user = await _user(work, subject)
            found_application = await _application(work, application)
            held = list(await work.grants.list_for(found_user.id, found_application.id))
            withdraw, holder = work.grants.revoke, f"user {found_user.name!r}"
        matching = [grant for grant in held if policy == ALL_POLICIES or grant.policy == policy]
        if not matching and policy != ALL_POLICIES:
            raise NotFound(f"{holder} has no grant of {found_application.image!r} with this policy")
        for grant in matching:
            await withdraw(grant.mapping_id)
        await work.commit()
    for grant in matching:
        by.record(AuditAction.REVOKE, grant.mapping_id, grant_detail(grant))
    return len(matching)


async def revoke_grant(
    uow: UnitOfWorkFactory, mapping_id: str, *, by: Attribution = UNRECORDED
) -> None:
    """Withdraw one grant to a user by its mapping id."""
    async with uow() as work:
        grant = await work.grants.get(mapping_id)
        await work.grants.revoke(mapping_id)
        await work.commit()
    by.record(AuditAction.REVOKE, grant.mapping_id, grant_detail(grant))


async def revoke_group_grant(
    uow: UnitOfWorkFactory, mapping_id: str, *, by: Attribution = UNRECORDED
) -> GroupGrant:
    """Withdraw one group grant by its mapping id; ``NotFound`` if there is none."""
    async with uow() as work:
        granted = await work.grants.revoke_group(mapping_id)
        await work.commit()
    by.record(AuditAction.REVOKE, granted.mapping_id, grant_detail(granted))
    return granted


def grant_detail(grant: Grant | GroupGrant) -> dict[str, object]:
    """What the audit trail says of a grant: to whom (``user`` or ``group``), what, and the
    policy's switches; never its licence."""
    policy = grant.policy
    to: dict[str, object] = (
        {"user": grant.user.name} if isinstance(grant, Grant) else {"group": grant.group}
    )
    return {
        **to,
        "image": grant.application.image,
        "allow_home": policy.allow_home,
        "allow_view": policy.allow_view,
        "allow_common": policy.allow_common,
        "volume": None if policy.volume is None else policy.volume.target,
    }


async def list_group_grants(uow: UnitOfWorkFactory, group: str | None = None) -> list[GroupGrant]:
    """The grants to ``group`` (every group's: None), by group, application, mapping id."""
    async with uow() as work:
        if group is None:
            return list(await work.grants.list_groups())
        return list(await work.grants.list_groups({validate_group_name(group)}))


async def get_grant(uow: UnitOfWorkFactory, mapping_id: str) -> Grant:
    """One grant by its mapping id."""
    async with uow() as work:
        return await work.grants.get(mapping_id)


async def list_grants(uow: UnitOfWorkFactory, user_id: int | None = None) -> list[Grant]:
    """The grants of one user (by id), or of everyone when ``user_id`` is None."""
    async with uow() as work:
        if user_id is None:
            return list(await work.grants.list_all())
        return list(await work.grants.list_for_user(user_id))


async def grants_of_user(uow: UnitOfWorkFactory, user: UserRef) -> UserGrants:
    """One user (by id or name) with their grants; ``NotFound`` for an unknown user."""
    async with uow() as work:
        found = await _user(work, user)
        return UserGrants(found, tuple(await work.grants.list_for_user(found.id)))


# ------------------------------------------------------------------------------ lookups
def _validated(subject: Subject) -> Subject:
    if isinstance(subject, HubGroup):
        return HubGroup(validate_group_name(subject.name))
    return subject


async def _user(work: UnitOfWork, user: UserRef) -> User:
    if isinstance(user, int):
        if not 0 < user <= MAX_ROW_ID:
            raise NotFound(f"no user with id {user}")
        return await work.users.get(user)
    return await work.users.get_by_name(user)


async def _application(work: UnitOfWork, application: ApplicationRef) -> Application:
    if isinstance(application, int):
        if not 0 < application <= MAX_ROW_ID:
            raise NotFound(f"no application with id {application}")
        return await work.applications.get(application)
    return await work.applications.get_by_image(application)
