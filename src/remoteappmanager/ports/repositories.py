"""The persistence ports: repositories of the catalogue and the unit of work that scopes them.

Contract (checked against the in-memory fakes and the SQL adapter by one contract test,
``tests/integration/test_repository_contract.py``):

- Repositories return domain values (``User``, ``Application``, ``Grant``), never rows.
- Lists are ordered by id (creation order); grants by user, application, then mapping id.
- Nothing a repository does is visible to other units of work until ``commit()``; leaving the
  unit of work without committing rolls everything back, including after an error.
- Every method raises ``Unavailable`` when the database cannot be reached or used.
- ``catalogue_version()`` changes with every committed write of the catalogue, whichever
  process made it (it is stored with the catalogue, bumped in the same transaction); it does
  not change on reads or on work rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from remoteappmanager.domain.models import Application, Grant, GroupGrant, Policy, User
from remoteappmanager.domain.sessions import StopRecord
from remoteappmanager.domain.shares import Share, ShareKind, ShareMode


class UserRepository(Protocol):
    """The people who may be granted applications, by hub user name."""

    async def add(self, name: str) -> User:
        """Create a user; ``Exists`` if the name is taken. The name must already be valid."""
        ...

    async def get(self, user_id: int) -> User:
        """The user with this id; ``NotFound`` if there is none."""
        ...

    async def get_by_name(self, name: str) -> User:
        """The user with this name; ``NotFound`` if there is none."""
        ...

    async def list(self) -> Sequence[User]:
        """Every user, ordered by id."""
        ...

    async def page(
        self, *, contains: str | None = None, limit: int, offset: int = 0
    ) -> tuple[int, Sequence[User]]:
        """How many users' names contain ``contains`` (case-insensitively; every user when
        None), and ``limit`` of them from ``offset``, ordered by id."""
        ...

    async def remove(self, user_id: int) -> None:
        """Delete the user and (by cascade) every grant they hold; ``NotFound`` if absent."""
        ...


class ApplicationRepository(Protocol):
    """The catalogue of Docker images that may be granted."""

    async def add(self, image: str) -> Application:
        """Register an image; ``Exists`` if it is registered. The name must already be valid."""
        ...

    async def get(self, application_id: int) -> Application:
        """The application with this id; ``NotFound`` if there is none."""
        ...

    async def get_by_image(self, image: str) -> Application:
        """The application for this image name; ``NotFound`` if there is none."""
        ...

    async def list(self) -> Sequence[Application]:
        """Every application, ordered by id."""
        ...

    async def remove(self, application_id: int) -> None:
        """Delete the application and (by cascade) every grant of it; ``NotFound`` if absent."""
        ...


class GrantRepository(Protocol):
    """Who may run what under which policy (the ``accounting`` of the original)."""

    async def grant(self, user: User, application: Application, policy: Policy) -> Grant:
        """Let ``user`` run ``application`` under ``policy``; idempotent.

        Policies are stored once per distinct content and shared between grants. Granting the
        same (user, application, policy) again returns the existing grant, so the same
        ``mapping_id`` comes back. ``NotFound`` if the user or the application does not exist.
        """
        ...

    async def get(self, mapping_id: str) -> Grant:
        """The grant with this mapping id; ``NotFound`` if there is none."""
        ...

    async def list_all(self) -> Sequence[Grant]:
        """Every grant of every user."""
        ...

    async def policies_of(self, mapping_ids: Collection[str]) -> Mapping[str, Policy]:
        """The policy of each grant among ``mapping_ids``, to a user or to a hub group (the
        user's where both had one id); an id of no grant is left out. One query for a page
        of ids, however many, not one per id."""
        ...

    async def page_all(self, *, limit: int, offset: int = 0) -> tuple[int, Sequence[Grant]]:
        """How many grants there are, and ``limit`` of them from ``offset`` in the order of
        ``list_all``."""
        ...

    async def list_for_user(self, user_id: int) -> Sequence[Grant]:
        """The user's grants (empty for an unknown user)."""
        ...

    async def list_for(self, user_id: int, application_id: int) -> Sequence[Grant]:
        """The user's grants of one application, one per policy."""
        ...

    async def revoke(self, mapping_id: str) -> None:
        """Delete one grant; ``NotFound`` if there is none with this mapping id."""
        ...

    # Grants to hub groups: mapping ids share one space with the grants to users (both are
    # 32 random hex digits); the group name is the hub's and needs no row of its own.
    async def grant_group(self, group: str, application: Application, policy: Policy) -> GroupGrant:
        """Let every member of hub group ``group`` run ``application`` under ``policy``;
        idempotent as ``grant``. ``NotFound`` if the application does not exist."""
        ...

    async def get_group(self, mapping_id: str) -> GroupGrant:
        """The group grant with this mapping id; ``NotFound`` if there is none."""
        ...

    async def list_groups(self, groups: Collection[str] | None = None) -> Sequence[GroupGrant]:
        """The grants to these groups (every group: None), ordered by group, application,
        then mapping id."""
        ...

    async def revoke_group(self, mapping_id: str) -> GroupGrant:
        """Delete one group grant and return it; ``NotFound`` if there is none."""
        ...


class SessionRecordRepository(Protocol):
    """What outlives a session's container or the service's memory: when each session last
    had client input, and why recent sessions ended. Writes here never change the
    catalogue's version."""

    async def record_inputs(self, inputs: Mapping[str, datetime]) -> None:
        """Store the last input time of each session (by ``url_id``); an older time than
        the stored one is ignored."""
        ...

    async def last_inputs(self, url_ids: Collection[str]) -> dict[str, datetime]:
        """The stored last input times of these sessions (absent ones are left out)."""
        ...

    async def record_stop(self, record: StopRecord) -> None:
        """Store why a session ended (replacing an earlier record of the same ``url_id``),
        and forget its input time."""
        ...

    async def stop_of(self, url_id: str) -> StopRecord | None:
        """Why session ``url_id`` ended; None if it is not known to have ended."""
        ...

    async def stops_for_user(self, user: str, since: datetime) -> Sequence[StopRecord]:
        """The user's sessions that ended at or after ``since``, newest first."""
        ...

    async def prune(self, before: datetime) -> int:
        """Forget stops, and input times, older than ``before``; returns how many rows."""
        ...


class ShareRepository(Protocol):
    """Who else may enter a running session (keyed by its ``url_id``), and how.

    Shares are not part of the catalogue: writing them leaves ``catalogue_version`` alone.
    """

    async def put(
        self, url_id: str, kind: ShareKind, subject: str, mode: ShareMode, created_at: datetime
    ) -> Share:
        """Share the session with ``subject``; at most one share per (session, kind,
        subject): sharing again changes the existing share's mode and returns it (with its
        id and first ``created_at``). The subject must already be valid."""
        ...

    async def get(self, share_id: int) -> Share:
        """The share with this id; ``NotFound`` if there is none."""
        ...

    async def list_for(self, url_id: str) -> Sequence[Share]:
        """The session's shares, ordered by id."""
        ...

    async def remove(self, share_id: int) -> None:
        """Delete one share; ``NotFound`` if there is none with this id."""
        ...

    async def remove_all(self, url_id: str) -> int:
        """Delete every share of the session; returns how many there were."""
        ...


class UnitOfWork(Protocol):
    """One transaction over the repositories: ``async with uow: ...; await uow.commit()``.

    The repositories are usable only inside the ``async with`` block. Leaving the block
    rolls back whatever was not committed; ``commit()`` may be called more than once.
    """

    @property
    def users(self) -> UserRepository: ...

    @property
    def applications(self) -> ApplicationRepository: ...

    @property
    def grants(self) -> GrantRepository: ...

    @property
    def session_records(self) -> SessionRecordRepository: ...

    @property
    def shares(self) -> ShareRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None:
        """Make the work so far durable and visible; ``Exists`` on a conflicting write."""
        ...

    async def rollback(self) -> None:
        """Discard the work since the last commit."""
        ...

    async def catalogue_version(self) -> int:
        """The catalogue's version as committed (see the module): equal values mean that no
        change was committed in between."""
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]
"""Gives a fresh, not yet entered unit of work; services take one of these."""
