"""Administration use cases: the catalogue with its consequences, everyone's sessions, statistics.

Contract:
- Users and applications are named by id here (the admin API's identifiers); grants by
  mapping id. Catalogue errors are those of ``services.catalogue`` (``InvalidRequest``,
  ``NotFound``, ``Exists``, ``Unavailable``).
- Taking a right away ends what runs under it: removing a user stops every session of theirs,
  removing an application or revoking a grant stops the sessions of its grants. They are
  stopped *before* the catalogue changes, so that a stop that fails (``Unavailable``, or
  ``Conflict`` while one is still starting) leaves the catalogue as it was, to be tried again.
- A grant's volume must pass the volume rules (``volumes``; without them no volume may be
  granted): ``InvalidRequest`` and nothing written.
- Every change of grants is shown on the users' pages at once (``Applications.forget_grants``).
- While the container engine cannot be reached the catalogue can still be managed: an
  application's image state says so; the session use cases raise ``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from remoteappmanager.domain.audit import SYSTEM_ACTOR, StopReason
from remoteappmanager.domain.errors import NotFound, Unavailable
from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import Application, Grant, GroupGrant, Policy, User
from remoteappmanager.domain.sessions import Session, SessionState
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services import catalogue
from remoteappmanager.services.applications import Applications
from remoteappmanager.services.audit import DISCARD, Attribution, Recorder
from remoteappmanager.services.catalogue import ApplicationRef, UserGrants, VolumeGuard
from remoteappmanager.services.sessions import Sessions

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RegisteredApplication:
    """An application of the catalogue and what the engine says of its image.

    ``available`` is None (and ``image`` None) when the engine could not be asked; when it is
    False, ``unavailable_reason`` says why (missing, a reference the engine refuses...).
    """

    application: Application
    image: ImageMetadata | None
    available: bool | None
    unavailable_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Statistics:
    realm: str
    num_total_users: int
    num_active_users: int
    num_applications: int
    num_running_containers: int


class Administration:
    """What the admin API and page do (see the module contract)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        realm: str,
        sessions: Sessions,
        applications: Applications,
        volumes: VolumeGuard | None = None,
        audit: Recorder = DISCARD,
    ) -> None:
        self._uow = uow_factory
        self._audit = audit
        self._volumes = volumes
        self.realm = realm
        self._sessions = sessions
        self._applications = applications

    # ----------------------------------------------------------------- users
    async def list_users(self) -> list[User]:
        return await catalogue.list_users(self._uow)

    async def users_page(
        self, *, contains: str | None = None, limit: int, offset: int = 0
    ) -> tuple[int, list[User]]:
        """How many users match, and one page of them (see ``catalogue.page_users``)."""
        return await catalogue.page_users(self._uow, contains=contains, limit=limit, offset=offset)

    async def get_user(self, user_id: int) -> User:
        return await catalogue.get_user(self._uow, user_id)

    async def create_user(self, name: str, *, actor: str = SYSTEM_ACTOR) -> User:
        user = await catalogue.create_user(self._uow, name, by=self._by(actor))
        log.info("admin.user_created", user=user.name, user_id=user.id)
        return user

    async def remove_user(self, user_id: int, *, actor: str = SYSTEM_ACTOR) -> None:
        user = await catalogue.get_user(self._uow, user_id)
        await self._stop_sessions(lambda session: session.user == user.name, actor)
        await catalogue.remove_user(self._uow, user.id, by=self._by(actor))
        self._forget_grants(user.name)
        log.info("admin.user_removed", user=user.name, user_id=user.id)

    # ----------------------------------------------------------------- applications
    async def list_applications(self) -> list[RegisteredApplication]:
        return [
            await self._registered(application)
            for application in await catalogue.list_applications(self._uow)
        ]

    async def get_application(self, application_id: int) -> RegisteredApplication:
        return await self._registered(await catalogue.get_application(self._uow, application_id))

    async def create_application(self, image: str, *, actor: str = SYSTEM_ACTOR) -> Application:
        application = await catalogue.create_application(self._uow, image, by=self._by(actor))
        # The image may have been built since it was last looked up.
        self._applications.forget_image(application.image)
        log.info("admin.application_created", image=application.image, id=application.id)
        return application

    async def remove_application(self, application_id: int, *, actor: str = SYSTEM_ACTOR) -> None:
        application = await catalogue.get_application(self._uow, application_id)
        granted = {
            grant.mapping_id
            for grant in await catalogue.list_grants(self._uow)
            if grant.application.id == application.id
        }
        await self._stop_sessions(lambda session: session.mapping_id in granted, actor)
        await catalogue.remove_application(self._uow, application.id, by=self._by(actor))
        self._forget_grants(None)
        log.info("admin.application_removed", image=application.image, id=application.id)

    async def _registered(self, application: Application) -> RegisteredApplication:
        try:
            state = await self._applications.image_state(application.image)
        except Unavailable as exc:
            return RegisteredApplication(application, None, None, exc.message)
        return RegisteredApplication(
            application, state.metadata, state.available, state.unavailable_reason
        )

    # ----------------------------------------------------------------- grants
    async def grants_of(self, user_id: int) -> UserGrants:
        """The user's grants; ``NotFound`` for an unknown user."""
        return await catalogue.grants_of_user(self._uow, user_id)

    async def grants_page(self, *, limit: int, offset: int = 0) -> tuple[int, list[Grant]]:
        """How many grants there are, and one page of everyone's."""
        return await catalogue.page_grants(self._uow, limit=limit, offset=offset)

    async def get_grant(self, mapping_id: str) -> Grant:
        return await catalogue.get_grant(self._uow, mapping_id)

    async def grant(
        self,
        user_id: int,
        application: ApplicationRef,
        policy: Policy,
        *,
        actor: str = SYSTEM_ACTOR,
    ) -> Grant:
        """Idempotent: the same grant again gives the same mapping id."""
        grant = await catalogue.grant_access(
            self._uow, application, user_id, policy, volumes=self._volumes, by=self._by(actor)
        )
        self._forget_grants(grant.user.name)
        log.info(
            "admin.granted",
            user=grant.user.name,
            image=grant.application.image,
            mapping_id=grant.mapping_id,
        )
        return grant

    async def revoke(self, mapping_id: str, *, actor: str = SYSTEM_ACTOR) -> None:
        grant = await catalogue.get_grant(self._uow, mapping_id)
        await self._stop_sessions(lambda session: session.mapping_id == grant.mapping_id, actor)
        await catalogue.revoke_grant(self._uow, grant.mapping_id, by=self._by(actor))
        self._forget_grants(grant.user.name)
        log.info("admin.revoked", user=grant.user.name, mapping_id=grant.mapping_id)

    # ----------------------------------------------------------------- group grants
    async def group_grants(self, group: str) -> list[GroupGrant]:
        """The grants to hub group ``group`` (a group without any has none)."""
        return await catalogue.list_group_grants(self._uow, group)

    async def get_group_grant(self, mapping_id: str) -> GroupGrant:
        async with self._uow() as work:
            return await work.grants.get_group(mapping_id)

    async def grant_group(
        self,
        group: str,
        application: ApplicationRef,
        policy: Policy,
        *,
        actor: str = SYSTEM_ACTOR,
    ) -> GroupGrant:
        """Idempotent: the same grant to the group again gives the same mapping id."""
        granted = await catalogue.grant_access(
            self._uow,
            application,
            catalogue.HubGroup(group),
            policy,
            volumes=self._volumes,
            by=self._by(actor),
        )
        self._forget_grants(None)
        log.info(
            "admin.granted_group",
            group=granted.group,
            image=granted.application.image,
            mapping_id=granted.mapping_id,
        )
        return granted

    async def revoke_group(self, mapping_id: str, *, actor: str = SYSTEM_ACTOR) -> None:
        """Withdraw a group grant and stop every member's session of it."""
        granted = await self.get_group_grant(mapping_id)
        await self._stop_sessions(lambda session: session.mapping_id == granted.mapping_id, actor)
        await catalogue.revoke_group_grant(self._uow, granted.mapping_id, by=self._by(actor))
        self._forget_grants(None)
        log.info("admin.revoked_group", group=granted.group, mapping_id=granted.mapping_id)

    # ----------------------------------------------------------------- sessions
    async def list_sessions(self) -> list[Session]:
        """Every session of this realm, by user then image."""
        sessions = await self._sessions.list_all()
        return sorted(sessions, key=lambda s: (s.user, s.image, s.url_id))

    async def sessions_page(
        self, *, user: str | None = None, limit: int | None = None, offset: int = 0
    ) -> tuple[int, list[Session]]:
        """How many sessions (of ``user``, or everyone's) there are, and one page of them in
        the order of ``list_sessions``."""
        sessions = await self.list_sessions()
        if user is not None:
            sessions = [session for session in sessions if session.user == user]
        end = None if limit is None else offset + limit
        return len(sessions), sessions[offset:end]

    async def get_session(self, url_id: str) -> Session:
        """Session ``url_id`` whoever owns it; ``NotFound`` if there is none."""
        return await self._sessions.get_any(url_id)

    async def stop_session(self, url_id: str, *, actor: str = SYSTEM_ACTOR) -> None:
        """Stop session ``url_id`` whoever owns it; ``NotFound`` if there is none."""
        await self._sessions.stop_any(url_id, actor=actor, reason=StopReason.ADMIN)
        log.info("admin.session_stopped", url_id=url_id)

    async def statistics(self) -> Statistics:
        # Counted, not listed: a realm of 10,000 users costs one indexed count.
        num_users, _ = await catalogue.page_users(self._uow, contains=None, limit=1, offset=0)
        applications = await catalogue.list_applications(self._uow)
        running = [s for s in await self._sessions.list_all() if s.state is SessionState.RUNNING]
        return Statistics(
            realm=self.realm,
            num_total_users=num_users,
            num_active_users=len({session.user for session in running}),
            num_applications=len(applications),
            num_running_containers=len(running),
        )

    # ----------------------------------------------------------------- helpers
    def _by(self, actor: str) -> Attribution:
        return Attribution(self._audit, actor)

    async def _stop_sessions(self, include: Callable[[Session], bool], actor: str) -> None:
        for session in await self._sessions.list_all():
            if not include(session):
                continue
            try:
                await self._sessions.stop_any(session.url_id, actor=actor, reason=StopReason.ADMIN)
            except NotFound:
                continue  # it ended meanwhile
            log.info("admin.session_stopped", user=session.user, url_id=session.url_id)

    def _forget_grants(self, user: str | None) -> None:
        self._applications.forget_grants(user)
