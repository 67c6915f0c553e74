"""What a user may run: their grants with each image's metadata, offer and running session.

Contract:
- ``list_for(user, groups)`` gives the user's grants in the catalogue's order (user,
  application, mapping id), then the grants to the hub groups ``groups`` they are in (by
  group, application, mapping id; ``Grant.source_group`` names the group), each with the
  image's metadata, the configurables offered under its policy and the user's session of
  that grant, if any. An unknown user has no applications (``[]``).
- ``get_for(user, mapping_id)`` gives one of them; ``NotFound`` for a grant that is not the
  user's (whether it exists or not), or a grant to a group not in ``groups``. Group grants
  need the user's entry (made at sign-in with ``auto_user_creation``): without one the user
  has no applications.
- No single grant can fail the list: an image the engine does not hold, refuses to inspect
  (a reference registered before it was checked, an engine error) or describes in a way we
  cannot read is listed as unavailable (``image=None``) with the reason in
  ``unavailable_reason``, and the other grants are listed as usual.
- Errors: ``Unavailable`` when the database or the engine cannot be reached.

Freshness: a change of the catalogue committed by any process (this one, another replica,
``remoteappdb``) shows within ``CatalogueWatch``'s interval plus one database read (about a
second): the catalogue's version is compared at most once per interval, and a new version
drops the cached grants and the images remembered as unavailable. Changes made through this
process show at once (``forget_grants``). Starting a grant always reads it afresh, so a
revoked grant listed a moment longer still cannot be started.

Cost: image metadata is kept for ``image_ttl`` seconds (a missing image for
``missing_image_ttl``), each user's grants (read by their own two indexed queries) for
``grants_ttl`` seconds unless the version moves, each looked up once however many requests
want it meanwhile. An entry older than ``grants_ttl`` but younger than twice that is answered
at once while it is read again in the background, so entries expiring never make requests
queue for the database. With a listing TTL on ``Sessions`` a listing then costs no engine call
and at most one small database read a second in the steady state, whatever the number of
users: nothing on the way reads or walks everybody's data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.configurables import offered_configurables
from remoteappmanager.domain.errors import InvalidRequest, NotFound, RemoteAppError, Unavailable
from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import Grant, GroupGrant, Policy, User
from remoteappmanager.domain.sessions import Session, StopRecord
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.services.activity import ActivityTracker, SessionTimes
from remoteappmanager.services.sessions import Sessions

log = structlog.get_logger(__name__)

DEFAULT_IMAGE_TTL = 60.0
# Short: an admin who builds a missing image expects to see it soon.
DEFAULT_MISSING_IMAGE_TTL = 5.0
# Images described at once; a catalogue has far fewer.
DEFAULT_MAX_IMAGES = 10_000
# A safety net only: changes show through the catalogue's version (``CatalogueWatch``) within
# a second whatever this is. Ten seconds made 200 users' refreshes a steady stream of SQLite
# reads in aiosqlite's thread, which took the GIL from the event loop under load.
DEFAULT_GRANTS_TTL = 60.0
# How many users' grants are kept; past it the least recently read go first.
DEFAULT_MAX_CACHED_USERS = 100_000
# Background refreshes of stale entries read the database this many at a time: entries read
# together (at start, say) expire together, and their refreshes must not make the requests
# that need the database queue behind them.
DEFAULT_REFRESH_CONCURRENCY = 4
# How often the catalogue's version is compared: the bound on how late another process's
# change shows (plus one read).
DEFAULT_VERSION_INTERVAL = 1.0


IMAGE_MISSING = "the image is not on the Docker engine"
IMAGE_UNREADABLE = "the Docker engine's description of the image could not be read"


@dataclass(frozen=True, slots=True)
class ImageState:
    """What the engine says of an image: its metadata, or why there is none."""

    metadata: ImageMetadata | None
    unavailable_reason: str | None = None
    lasting: bool = False
    """Unavailable for good (a reference the engine refuses): remembered as long as a
    description is."""

    @property
    def available(self) -> bool:
        return self.metadata is not None


@dataclass(frozen=True, slots=True)
class UserApplication:
    """One entry of a user's page: a grant, its image (None: unavailable, see
    ``unavailable_reason``), offer and session."""

    grant: Grant
    image: ImageMetadata | None
    configurables: tuple[str, ...]
    session: Session | None
    unavailable_reason: str | None = None
    times: SessionTimes | None = None
    """The running session's start, last input and deadline."""
    last_stop: StopRecord | None = None
    """Why the grant's last session ended, when none runs now and it ended lately."""

    @property
    def mapping_id(self) -> str:
        return self.grant.mapping_id

    @property
    def available(self) -> bool:
        return self.image is not None


@dataclass(frozen=True, slots=True)
class _Held:
    """A user's entry (None: unknown) and the grants made to them by name."""

    user: User | None
    grants: tuple[Grant, ...]


_NOBODY = _Held(None, ())


class ImageMetadataCache:
    """Image metadata by name for a bounded time, one engine lookup per image at a time.

    An image that cannot be described (missing, refused by the engine, unreadable) is
    remembered with the reason, for the shorter ``missing_ttl``; ``Unavailable`` (the engine
    cannot be reached) is raised and not remembered.
    """

    def __init__(
        self,
        runtime: ContainerRuntime,
        *,
        ttl: float = DEFAULT_IMAGE_TTL,
        missing_ttl: float = DEFAULT_MISSING_IMAGE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._states: TtlCache[str, ImageState] = TtlCache(
            ttl=ttl,
            maxsize=DEFAULT_MAX_IMAGES,
            clock=clock,
            ttl_of=lambda state: ttl if state.available or state.lasting else missing_ttl,
        )

    async def get(self, image: str) -> ImageState:
        return await self._states.get(image, lambda: self._lookup(image))

    def forget(self, image: str | None = None) -> None:
        """Drop one image (or all): the next request looks it up again."""
        if image is None:
            self._states.clear()
        else:
            self._states.discard(image)

    def forget_unavailable(self) -> None:
        """Drop every image remembered as unavailable (the catalogue changed)."""
        self._states.discard_where(lambda state: not state.available)

    async def _lookup(self, image: str) -> ImageState:
        try:
            state = ImageState(await self._runtime.inspect_image(image))
        except NotFound:
            state = ImageState(None, IMAGE_MISSING)
        except Unavailable:
            raise
        except InvalidRequest as exc:
            # A reference the engine refuses never becomes valid: remembered as long as a
            # description, and said once per period rather than on every listing.
            log.warning("applications.image_refused", image=image[:80], error=exc.message)
            return ImageState(None, exc.message, lasting=True)
        except RemoteAppError as exc:
            # An engine error on this one image.
            log.warning("applications.image_unavailable", image=image[:80], error=exc.message)
            state = ImageState(None, exc.message)
        except Exception:
            # One image must not take every listing down with it, whatever went wrong.
            log.exception("applications.image_unreadable", image=image[:80])
            state = ImageState(None, IMAGE_UNREADABLE)
        return state


class CatalogueWatch:
    """Tells whether the catalogue changed since it last looked, in any process.

    ``changed()`` reads the catalogue's version at most once per ``interval`` seconds, one
    read at a time however many requests ask (they share it), and answers True when the
    version differs from the one seen before. The first read only records the version. A
    database that cannot be read counts as no change (logged): cached answers stay usable
    while it is down, and the next check comes after ``interval`` again.
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        interval: float = DEFAULT_VERSION_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow_factory = uow_factory
        self._interval = interval
        self._clock = clock
        self._version: int | None = None
        self._checked_at: float | None = None
        self._read: asyncio.Future[bool] | None = None

    def due(self) -> bool:
        """Whether the next ``changed()`` would read the version (no I/O)."""
        checked = self._checked_at
        return checked is None or self._clock() - checked >= self._interval

    async def changed(self) -> bool:
        if not self.due():
            return False
        read = self._read
        if read is None:
            read = asyncio.ensure_future(self._compare())
            self._read = read
            read.add_done_callback(self._done)
        # Shielded: a caller giving up must not cancel the read others wait for.
        return await asyncio.shield(read)

    def _done(self, read: asyncio.Future[bool]) -> None:
        if self._read is read:
            self._read = None
        if not read.cancelled():
            read.exception()  # retrieved: every waiter may have gone away

    async def _compare(self) -> bool:
        started = self._clock()
        try:
            async with self._uow_factory() as uow:
                version = await uow.catalogue_version()
        except Unavailable as exc:
            log.warning("applications.catalogue_version_unreadable", error=exc.message)
            self._checked_at = started
            return False
        self._checked_at = started
        previous, self._version = self._version, version
        return previous is not None and previous != version


class Applications:
    """The query behind the user page and ``{svc}api/v1/applications/`` (see the module)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        sessions: Sessions,
        images: ImageMetadataCache,
        *,
        grants_ttl: float = DEFAULT_GRANTS_TTL,
        watch: CatalogueWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_cached_users: int = DEFAULT_MAX_CACHED_USERS,
        activity: ActivityTracker | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._sessions = sessions
        self._activity = activity
        self._images = images
        self._grants_ttl = grants_ttl
        self._watch = watch or CatalogueWatch(uow_factory, clock=clock)
        # Stale but recent grants (up to twice the TTL) are answered at once while one
        # refresh runs in the background, in turn with the other refreshes.
        self._grants: TtlCache[str, _Held] = TtlCache(
            ttl=grants_ttl, stale=grants_ttl, maxsize=max_cached_users, clock=clock
        )
        # The grants to each hub group, kept and refreshed alike.
        self._group_grants: TtlCache[str, tuple[GroupGrant, ...]] = TtlCache(
            ttl=grants_ttl, stale=grants_ttl, maxsize=max_cached_users, clock=clock
        )
        self._refresh_slots = asyncio.Semaphore(DEFAULT_REFRESH_CONCURRENCY)

    def forget_grants(self, user: str | None = None) -> None:
        """Read ``user``'s grants (everybody's: None) afresh next time."""
        # A read under way may have seen the old grants: it is not kept either.
        if user is None:
            self._grants.clear()
            self._group_grants.clear()
        else:
            self._grants.discard(user)

    async def image_state(self, image: str) -> ImageState:
        """What ``image`` declares, or why it is unavailable, from the listings' cache."""
        return await self._images.get(image)

    def forget_image(self, image: str) -> None:
        """Look ``image`` up afresh next time (after it was registered, say)."""
        self._images.forget(image)

    async def list_for(self, user: str, groups: Iterable[str] = ()) -> list[UserApplication]:
        grants = await self._grants_of(user, groups)
        if not grants:
            return []
        return await self._describe(user, grants)

    async def get_for(
        self, user: str, mapping_id: str, groups: Iterable[str] = ()
    ) -> UserApplication:
        for grant in await self._grants_of(user, groups):
            if grant.mapping_id == mapping_id:
                (found,) = await self._describe(user, [grant])
                return found
        raise NotFound(f"no application {mapping_id!r:.40} is granted to {user}")

    async def grants_of(self, user: str, groups: Iterable[str] = ()) -> Sequence[Grant]:
        """The grants ``user`` holds, by name and through ``groups``, from the cache."""
        return await self._grants_of(user, groups)

    async def _grants_of(self, user: str, groups: Iterable[str] = ()) -> Sequence[Grant]:
        if await self._watch.changed():
            # Changed by another process (or by this one, which forgot already): the cached
            # grants and the images remembered as unavailable may be out of date.
            self.forget_grants()
            self._images.forget_unavailable()
        if self._grants_ttl <= 0:
            held = await self._read_grants(user)
        else:
            held = await self._grants.get(
                user,
                lambda: self._read_grants(user),
                refresh=lambda: self._read_grants_in_turn(user),
            )
        if held.user is None:
            return held.grants
        through_groups: list[Grant] = []
        for group in sorted(set(groups)):
            for group_grant in await self._grants_to(group):
                through_groups.append(group_grant.for_user(held.user))
        return held.grants + tuple(through_groups) if through_groups else held.grants

    async def _grants_to(self, group: str) -> tuple[GroupGrant, ...]:
        if self._grants_ttl <= 0:
            return await self._read_group_grants(group)
        return await self._group_grants.get(group, lambda: self._read_group_grants(group))

    async def _read_group_grants(self, group: str) -> tuple[GroupGrant, ...]:
        async with self._uow_factory() as uow:
            return tuple(await uow.grants.list_groups({group}))

    async def _read_grants_in_turn(self, user: str) -> _Held:
        async with self._refresh_slots:
            return await self._read_grants(user)

    async def _read_grants(self, user: str) -> _Held:
        async with self._uow_factory() as uow:
            try:
                found = await uow.users.get_by_name(user)
            except NotFound:
                return _NOBODY
            return _Held(found, tuple(await uow.grants.list_for_user(found.id)))

    async def _describe(self, user: str, grants: Sequence[Grant]) -> list[UserApplication]:
        # Awaited one by one: cached answers come back without suspending, which is the
        # steady state, and costs far less than gathering tasks on every request.
        by_image: dict[str, ImageState] = {}
        for grant in grants:
            image_name = grant.application.image
            if image_name not in by_image:
                by_image[image_name] = await self._images.get(image_name)
        sessions = await self._sessions.list_for_user(user)
        by_grant: dict[str, Session] = {}
        for running in sessions:
            by_grant.setdefault(running.mapping_id, running)
        stops: dict[str, StopRecord] = {}
        stop_log = self._sessions.stop_log
        if stop_log is not None and len(by_grant) < len(grants):
            for record in await stop_log.recent_for(user):
                stops.setdefault(record.mapping_id, record)
        described: list[UserApplication] = []
        for grant in grants:
            state = by_image[grant.application.image]
            image = state.metadata
            offered = offered_configurables(image, grant.policy) if image is not None else ()
            session = by_grant.get(grant.mapping_id)
            described.append(
                UserApplication(
                    grant=grant,
                    image=image,
                    configurables=offered,
                    session=session,
                    unavailable_reason=state.unavailable_reason,
                    times=self._times(session, grant.policy) if session is not None else None,
                    last_stop=stops.get(grant.mapping_id) if session is None else None,
                )
            )
        return described

    def _times(self, session: Session, policy: Policy | None) -> SessionTimes | None:
        if self._activity is None:
            return None
        return self._activity.times(session, policy)

    async def session_times(
        self, user: str | None, sessions: Sequence[Session], groups: Iterable[str] = ()
    ) -> dict[str, SessionTimes]:
        """Each session's times by url id, under its grant's policy (``user``: all theirs;
        None: anybody's, as admins see them)."""
        if self._activity is None or not sessions:
            return {}
        policies: Mapping[str, Policy]
        if user is not None:
            policies = {
                grant.mapping_id: grant.policy for grant in await self._grants_of(user, groups)
            }
        else:
            async with self._uow_factory() as uow:
                policies = await uow.grants.policies_of({s.mapping_id for s in sessions})
        return {
            session.url_id: self._activity.times(session, policies.get(session.mapping_id))
            for session in sessions
        }
