"""Starting, stopping and listing users' application containers (sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace

import structlog

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.audit import SYSTEM_ACTOR, AuditAction
from remoteappmanager.domain.configurables import Configuration, validate_configurables
from remoteappmanager.domain.confinement import (
    DEFAULT_CONFINEMENT,
    Confinement,
    ResourceLimits,
    limits_for,
    user_uid,
)
from remoteappmanager.domain.containers import (
    RUNINFO_REALM,
    RUNINFO_URL_ID,
    RUNINFO_USER,
    ContainerInfo,
    ContainerSpec,
    Route,
    build_container_spec,
)
from remoteappmanager.domain.errors import (
    Conflict,
    Exists,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemoteAppError,
    Unable,
)
from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import Grant, Volume
from remoteappmanager.domain.naming import is_url_id, new_url_id, urlpath
from remoteappmanager.domain.sessions import (
    AccessMode,
    Session,
    SessionState,
    StartStep,
    StopReason,
    session_from_container,
)
from remoteappmanager.domain.volumes import NO_VOLUMES, VolumeRules
from remoteappmanager.ports.coordination import StartClaims
from remoteappmanager.ports.observers import StartObserver
from remoteappmanager.ports.probe import ReadinessProbe
from remoteappmanager.ports.repositories import UnitOfWork, UnitOfWorkFactory
from remoteappmanager.ports.routes import RouteTable
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.ports.workspaces import HostPaths, Workspaces
from remoteappmanager.services.activity import StopLog
from remoteappmanager.services.audit import DISCARD, Recorder
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.services.rate_limit import RateLimit

log = structlog.get_logger(__name__)

DEFAULT_NETWORK_TIMEOUT = 30.0
# How often a start checks that the container is still alive while waiting for it to answer,
# so that an application that crashes at once fails its start at once.
DEFAULT_WATCH_INTERVAL = 1.0
# A start's or stop's claim lasts this long and is renewed a third of the way in, for as
# long as the work goes on: one left by a replica that died (kill -9) lapses within it.
CLAIM_LEASE = 15.0
ROUTE_REALM = "realm"
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognised, not bound

_EXITED = "the application exited before it became ready"

_MAX_MALFORMED_REMEMBERED = 1024

# How many users' listings (and records of their last change) are kept; past it the oldest
# go, which costs those users one engine call more.
DEFAULT_MAX_CACHED_USERS = 100_000

SessionKey = tuple[str, str]


@dataclass(eq=False)
class _Claim:
    """Work in progress on one (user, grant): a start, a stop, or reconciler maintenance."""

    state: SessionState | None  # None: maintenance by the reconciler
    user: str
    mapping_id: str
    url_id: str | None = None
    image: str = ""
    container_id: str | None = None
    step: StartStep | None = None
    step_began: float = 0.0
    # The time spent "starting" before the engine began pulling, counted again when it resumes.
    started_for: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def as_session(self) -> Session | None:
        if self.state is None or self.url_id is None:
            return None
        return Session(
            url_id=self.url_id,
            user=self.user,
            mapping_id=self.mapping_id,
            image=self.image,
            urlpath=urlpath(self.user, self.url_id),
            state=self.state,
            container_id=self.container_id,
            step=self.step,
        )


class Sessions:
    """The use cases of running applications, over a container runtime and a route table.

    What runs is read from the engine every time (containers carry their session in labels),
    so a restarted service finds its sessions again; only work in progress lives in memory.
    Only containers labelled with ``realm`` are ever listed, stopped or replaced.

    Errors: ``NotFound`` (no such session for this user, image gone), ``InvalidRequest``
    (configurables), ``Conflict`` (a start or stop of the same grant is in progress),
    ``Conflict`` too when the user already runs ``max_sessions_per_user`` applications,
    ``TooManyRequests`` (``start_for`` more than ``start_rate_per_minute`` times a minute by
    one user; counted before anything else, so refused and failed starts count too),
    ``Unable`` (the application did not become ready, or its grant's volume breaks the volume
    rules), ``Unavailable`` (engine or proxy down). A failed start leaves neither a container
    nor a route behind.

    Containers are created under ``confinement`` (capabilities, limits, network); with a
    ``workspace_uid_base`` each user's containers run as a uid of their own (base + user id),
    which also owns their workspace; a policy
    volume is checked against ``volume_rules`` on the host's real paths at every start, so a
    grant written before the rules, or a link changed since, is refused rather than mounted.

    A start goes through the steps of ``StartStep``; the session a listing shows meanwhile
    carries the current one, and a failed start's message names the step it failed at. Each
    step's duration, and each start's outcome, go to ``start_observer`` when one is set.
    """

    def __init__(
        self,
        runtime: ContainerRuntime,
        routes: RouteTable,
        workspaces: Workspaces,
        host_paths: HostPaths,
        probe: ReadinessProbe,
        *,
        realm: str,
        publish_ip: str = "127.0.0.1",
        network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
        access: AccessMode = AccessMode.GATED,
        gate_url: str | None = None,
        watch_interval: float = DEFAULT_WATCH_INTERVAL,
        unit_of_work: UnitOfWorkFactory | None = None,
        listing_ttl: float = 0.0,
        confinement: Confinement = DEFAULT_CONFINEMENT,
        volume_rules: VolumeRules = NO_VOLUMES,
        start_rate_per_minute: int | None = None,
        max_sessions_per_user: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        workspace_uid_base: int | None = None,
        max_cached_users: int = DEFAULT_MAX_CACHED_USERS,
        stop_log: StopLog | None = None,
        audit: Recorder = DISCARD,
        start_claims: StartClaims | None = None,
        claim_holder: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if access is AccessMode.GATED and not gate_url:
            raise ValueError("gated access needs the URL of the gate (the service's own URL)")
        self._runtime = runtime
        self._routes = routes
        self.audit = audit
        self._workspaces = workspaces
        self._host_paths = host_paths
        self._probe = probe
        self.realm = realm
        self._publish_ip = publish_ip
        self._network_timeout = network_timeout
        self.access = access
        self._gate_url = gate_url
        self._watch_interval = watch_interval
        self._unit_of_work = unit_of_work
        self._confinement = confinement
        self._workspace_uid_base = workspace_uid_base
        self._volumes = VolumeGuard(volume_rules, host_paths)
        self._claims: dict[SessionKey, _Claim] = {}
        self._listing_ttl = listing_ttl
        self._start_rate = (
            RateLimit(start_rate_per_minute, what="application starts", clock=clock)
            if start_rate_per_minute is not None
            else None
        )
        self._max_sessions = max_sessions_per_user
        self._clock = clock
        # The realm's containers (one entry) and each user's: a change made through this
        # service discards the realm's and the user's entry, and a listing under way when it
        # happened is answered to its callers but not kept.
        self._realm_listing: TtlCache[str, Sequence[ContainerInfo]] = TtlCache(
            ttl=listing_ttl, maxsize=1, clock=clock
        )
        self._user_listings: TtlCache[str, Sequence[ContainerInfo]] = TtlCache(
            ttl=listing_ttl, maxsize=max_cached_users, clock=clock
        )
        # Bumped whenever this service changes what runs: a validator for others' caches.
        self._generation = 0
        # Per user: the generation of their last change (oldest first, bounded; a user not in
        # it last changed at or before the floor). Every request then costs a look-up in it,
        # not a pass over everybody's.
        self._max_listings = max_cached_users
        self._user_changes: dict[str, int] = {}
        self._changes_floor = 0
        self._malformed: set[str] = set()
        # mapping id -> the hub group of its grant (None: a grant to a user, or none).
        self._grant_groups: dict[str, str | None] = {}
        self.start_observer: StartObserver | None = None
        self.stop_log = stop_log
        self._start_claims = start_claims
        self._claim_holder = claim_holder
        self._wall_clock = wall_clock
        self._claim_ttl = CLAIM_LEASE
        self._releasing: set[asyncio.Task[None]] = set()
        self._stopped: list[Callable[[str], Awaitable[None]]] = []

    @property
    def default_limits(self) -> ResourceLimits:
        """The limits of a container whose policy sets none of its own."""
        return self._confinement.limits

    # ----------------------------------------------------------------- queries
    async def list_for_user(self, user: str) -> list[Session]:
        """The user's sessions: running, exited, and being started or stopped.

        With a ``listing_ttl``, each user's containers are listed (by label, on the engine) at
        most once per TTL, one engine call however many of the user's requests want it; a
        change made through this service to one user's sessions refreshes that user's entry
        only (at once), changes behind its back (a crash) show within the TTL.
        """
        if self._listing_ttl > 0:
            mine = await self._user_containers(user)
        else:
            mine = await self._runtime.list({RUNINFO_REALM: self.realm, RUNINFO_USER: user})
        return self._merge(mine, lambda claim: claim.user == user)

    async def list_all(self) -> list[Session]:
        """Every session of this realm (for admins); with a ``listing_ttl`` the realm's list is
        kept that long, and dropped by any change made through this service."""
        if self._listing_ttl > 0:
            containers = await self._realm_containers()
        else:
            containers = await self._runtime.list({RUNINFO_REALM: self.realm})
        return self._merge(containers, lambda claim: True)

    async def _realm_containers(self) -> Sequence[ContainerInfo]:
        return await self._realm_listing.get(
            self.realm, lambda: self._runtime.list({RUNINFO_REALM: self.realm})
        )

    async def _user_containers(self, user: str) -> Sequence[ContainerInfo]:
        return await self._user_listings.get(
            user, lambda: self._runtime.list({RUNINFO_REALM: self.realm, RUNINFO_USER: user})
        )

    def _changed(self, user: str) -> None:
        self._generation += 1
        self._realm_listing.clear()
        self._user_listings.discard(user)
        if len(self._user_changes) >= self._max_listings:
            # Forget who changed when, and treat everybody as changed now: every cached
            # answer is read afresh once, and the record of changes stays bounded.
            self._user_changes.clear()
            self._changes_floor = self._generation
        else:
            self._user_changes.pop(user, None)
            self._user_changes[user] = self._generation

    @property
    def generation(self) -> int:
        """Changes whenever this service ends a start, stop or repair: a cache validator."""
        return self._generation

    def generation_of(self, user: str) -> int:
        """The ``generation`` at which this service last changed ``user``'s sessions.

        An answer about the user computed from data read at generation ``g`` is still valid
        while ``generation_of(user) <= g`` (then nothing was changed for them since); costs
        one dictionary look-up, whatever the number of users.
        """
        return self._user_changes.get(user, self._changes_floor)

    async def get(self, user: str, url_id: str) -> Session:
        """The user's session ``url_id``; ``NotFound`` for anybody else's."""
        return await self._find(url_id, user)

    async def get_any(self, url_id: str) -> Session:
        """Session ``url_id`` whoever owns it (admins, the gate); ``NotFound`` if none."""
        return await self._find(url_id, None)

    def status(self, user: str, mapping_id: str) -> SessionState | None:
        """Whether a start or stop of this grant is in progress (no I/O)."""
        claim = self._claims.get((user, mapping_id))
        return claim.state if claim is not None else None

    def _merge(
        self, containers: Sequence[ContainerInfo], include: Callable[[_Claim], bool]
    ) -> list[Session]:
        sessions: list[Session] = []
        seen: set[SessionKey] = set()
        for info in containers:
            session = self._session_of(info)
            if session is not None:
                sessions.append(session)
                seen.add(session.key)
        for key, claim in self._claims.items():
            pending = claim.as_session()
            if key not in seen and pending is not None and include(claim):
                sessions.append(pending)
        return sessions

    def _session_of(self, info: ContainerInfo) -> Session | None:
        session = session_from_container(info, self.realm)
        if session is None:
            self._skipped(info)
            return None
        claim = self._claims.get(session.key)
        if claim is not None and claim.state is not None:
            step = claim.step if claim.url_id == session.url_id else None
            session = replace(session, state=claim.state, step=step)
        return session

    def _skipped(self, info: ContainerInfo) -> None:
        # A container of our realm whose labels are not a session's (made by hand, or by
        # something else): left out of every listing, and said so once per container.
        if info.labels.get(RUNINFO_REALM) != self.realm or info.id in self._malformed:
            return
        if len(self._malformed) >= _MAX_MALFORMED_REMEMBERED:
            self._malformed.clear()
        self._malformed.add(info.id)
        log.warning("session.container_skipped", container=info.id[:12], name=info.name[:80])

    async def _find(self, url_id: str, user: str | None) -> Session:
        if not is_url_id(url_id):
            raise NotFound("there is no such application running")
        missing = NotFound(f"there is no application {url_id} running")
        for claim in self._claims.values():
            if claim.url_id == url_id and (user is None or claim.user == user):
                pending = claim.as_session()
                if pending is not None and claim.container_id is None:
                    return pending
        containers = await self._runtime.list({RUNINFO_REALM: self.realm, RUNINFO_URL_ID: url_id})
        for info in containers:
            session = self._session_of(info)
            if session is not None and (user is None or session.user == user):
                return session
        raise missing

    # ----------------------------------------------------------------- start
    async def start_for(
        self,
        user: str,
        mapping_id: str,
        configurables: object = None,
        groups: Collection[str] = (),
    ) -> Session:
        """Start the application the user holds grant ``mapping_id`` for (``start``), by
        name or through one of the hub groups ``groups`` they are in now.

        ``NotFound`` when there is no such grant, it is somebody else's, or it is a grant to
        a group not in ``groups`` (or the user has no entry of their own);
        ``TooManyRequests`` when the user asked for too many starts in the last minute.
        """
        if self._start_rate is not None:
            self._start_rate.take(user)
        if self._unit_of_work is None:
            raise RuntimeError("Sessions was built without a unit of work to look grants up")
        grant: Grant | None = None
        async with self._unit_of_work() as uow:
            try:
                grant = await uow.grants.get(mapping_id)
            except NotFound:
                grant = await _group_grant_for(uow, user, mapping_id, groups)
        if grant is None or grant.user.name != user:
            raise NotFound(f"no application {mapping_id!r:.40} is granted to {user}")
        return await self.start(grant, configurables)

    async def start(self, grant: Grant, configurables: object = None) -> Session:
        """Start ``grant``'s application for its user, replacing a session of the same grant.

        Returns once the application answers on its URL path and the proxy routes to it.
        """
        claim = _Claim(SessionState.STARTING, grant.user.name, grant.mapping_id)
        claim.image = grant.application.image
        await self.wait_maintenance(claim.user, claim.mapping_id)
        busy = Conflict(
            f"{grant.application.image} is already being started or stopped for "
            f"{grant.user.name}; wait for it to finish"
        )
        with self._claimed(claim) as acquired:
            if not acquired:
                raise busy
            async with self._shared_claim(claim, busy):
                session = await self._start_claimed(grant, configurables, claim)
        log.info("session.started", user=claim.user, image=claim.image, url_id=session.url_id)
        self.audit.record(
            claim.user,
            AuditAction.START,
            session.url_id,
            {"owner": claim.user, "image": claim.image, "mapping_id": claim.mapping_id},
        )
        return session

    async def _start_claimed(self, grant: Grant, configurables: object, claim: _Claim) -> Session:
        await self._within_quota(claim)
        shown = grant.application.image
        # Visible in listings from here on, as "creating".
        claim.url_id = new_url_id()
        claim.step, claim.step_began = StartStep.CREATING, time.perf_counter()
        try:
            image = await self._runtime.inspect_image(grant.application.image)
            shown = image.ui_name
            options = validate_configurables(configurables, image, grant.policy)
            session = await self._start(grant, image, options, claim)
        except RemoteAppError as exc:
            step = claim.step
            log.warning(
                "session.start_failed",
                user=claim.user,
                image=claim.image,
                step=step,
                error=exc.message,
            )
            self._start_ended(claim, step, _reason(exc))
            # Bad input is not a step that failed: the message says what to change.
            at = "" if isinstance(exc, InvalidRequest) else f" (step: {step})"
            raise type(exc)(f"{shown} could not be started{at}: {exc.message}") from exc
        except BaseException as exc:
            reason = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            self._start_ended(claim, claim.step, reason)
            raise
        self._start_ended(claim, None, None)
        return session

    def _next_step(self, claim: _Claim, step: StartStep | None) -> None:
        """The claim's step ended well (its duration is reported); ``step`` begins (None:
        the start is over). A step that fails stays the claim's step."""
        now = time.perf_counter()
        if claim.step is not None and self.start_observer is not None:
            self.start_observer.step_finished(claim.image, claim.step, now - claim.step_began)
        claim.step, claim.step_began = step, now

    def _start_progress(self, claim: _Claim, step: StartStep) -> None:
        """The engine's word while it starts the container: ``PULLING`` while the image is made
        ready where it runs, ``STARTING`` once that is done. Pulling is its own step (users see
        it, its duration is reported); the time "starting" took around it is reported once, as
        one step, when the start goes on."""
        now = time.perf_counter()
        if step is StartStep.PULLING and claim.step is StartStep.STARTING:
            claim.started_for = now - claim.step_began
            claim.step, claim.step_began = StartStep.PULLING, now
        elif step is StartStep.STARTING and claim.step is StartStep.PULLING:
            if self.start_observer is not None:
                self.start_observer.step_finished(claim.image, claim.step, now - claim.step_began)
            claim.step, claim.step_began = StartStep.STARTING, now - claim.started_for

    def _start_ended(self, claim: _Claim, failed: StartStep | None, reason: str | None) -> None:
        if self.start_observer is not None:
            self.start_observer.start_finished(claim.image, failed, reason)

    async def _within_quota(self, claim: _Claim) -> None:
        """``Conflict`` when the user already runs ``max_sessions_per_user`` applications,
        counting starts under way and not counting the grant's own session, which a start
        replaces. Two starts racing for the last place may both be refused, never both run."""
        if self._max_sessions is None:
            return
        others = [
            session
            for session in await self.list_for_user(claim.user)
            if session.mapping_id != claim.mapping_id and session.state is not SessionState.EXITED
        ]
        if len(others) >= self._max_sessions:
            raise Conflict(
                f"{claim.user} already runs {len(others)} applications, the most one user may "
                f"run at once ({self._max_sessions}); stop one first"
            )

    async def _start(
        self, grant: Grant, image: ImageMetadata, options: Configuration, claim: _Claim
    ) -> Session:
        assert claim.url_id is not None
        route_tried = False
        routing: asyncio.Future[None] | None = None
        try:
            spec = await self._spec(grant, image, options, claim.url_id)
            try:
                claim.container_id = await self._runtime.create(spec)
            except Exists:
                # The name is derived from (realm, user, grant): the clash is the session this
                # start replaces. Finding it this way spares every other start a list call.
                await self._remove_previous(spec.name, claim)
                claim.container_id = await self._runtime.create(spec)
            self._next_step(claim, StartStep.STARTING)
            info = await self._runtime.start(
                claim.container_id, progress=lambda step: self._start_progress(claim, step)
            )
            self._start_progress(claim, StartStep.STARTING)
            if not info.running:
                raise Unable(_EXITED)
            route = self.route_for(info)
            session = self._session_of(info)
            if route is None or session is None:
                raise Unable("the engine did not publish the application's port")
            probe_url = f"http://{self._reach_host(info)}:{info.host_port}{session.urlpath}/"
            # The route is added while the application gets ready: nobody is sent to it
            # before the start answers, and the gate lets nothing through to a session that
            # is not running yet. A failed start removes it again.
            route_tried = True
            routing = asyncio.ensure_future(self._routes.add(route))
            self._next_step(claim, StartStep.WAITING)
            await self._wait_ready(claim, probe_url, routing)
            self._next_step(claim, StartStep.ROUTING)
            await routing
            self._next_step(claim, None)
        except BaseException:
            if routing is not None:
                routing.cancel()
                # Also retrieves its error, when the start failed for another reason.
                await asyncio.gather(routing, return_exceptions=True)
            await self._undo_start(claim, route_tried=route_tried)
            raise
        return replace(session, state=SessionState.RUNNING, step=None)

    async def _spec(
        self, grant: Grant, image: ImageMetadata, options: Configuration, url_id: str
    ) -> ContainerSpec:
        user = grant.user.name
        volume = await self._checked_volume(grant)
        owner = user_uid(self._workspace_uid_base, grant.user.id)
        workspace = await self._workspaces.ensure(user, owner) if grant.policy.allow_home else None
        mount_volume = volume is not None and await self._host_paths.exists(volume.source)
        if volume is not None and not mount_volume:
            log.warning("session.volume_skipped", user=user, source=volume.source)
        return build_container_spec(
            grant,
            image,
            options,
            url_id,
            self.realm,
            self._publish_ip,
            workspace,
            mount_volume=mount_volume,
            volume=volume,
            confinement=replace(
                self._confinement,
                run_as=owner,
                limits=limits_for(grant.policy, self._confinement.limits),
            ),
        )

    async def _checked_volume(self, grant: Grant) -> Volume | None:
        volume = grant.policy.volume
        if volume is None:
            return None
        try:
            return await self._volumes.check(volume)
        except (InvalidRequest, Forbidden) as exc:
            log.warning(
                "session.volume_refused",
                user=grant.user.name,
                mapping_id=grant.mapping_id,
                source=volume.source,
            )
            raise Unable(
                f"the grant's volume is refused: {exc.message}; an administrator must change "
                "the grant"
            ) from None

    async def _remove_previous(self, name: str, claim: _Claim) -> None:
        info = await self._runtime.inspect(name)
        if info is None:
            return
        previous = session_from_container(info, self.realm)
        if previous is None or previous.key != (claim.user, claim.mapping_id):
            raise Conflict(f"a container named {name} exists and is not one of ours")
        await self._remove(previous)
        log.info("session.replaced", user=claim.user, url_id=previous.url_id)
        await self.record_stop(previous, StopReason.USER, actor=claim.user)

    async def _wait_ready(self, claim: _Claim, url: str, routing: asyncio.Future[None]) -> None:
        """Until the application answers at ``url``; fails early if its container exits or
        the route being added meanwhile (``routing``) cannot be."""
        assert claim.container_id is not None
        ready = asyncio.create_task(self._probe.wait_ready(url, self._network_timeout))
        watch = asyncio.create_task(self._watch_alive(claim.container_id))
        waiting: set[asyncio.Future[None]] = {ready, watch, routing}
        try:
            while not (ready.done() or watch.done()):
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if routing in done:
                    waiting.discard(routing)
                    if not routing.cancelled() and routing.exception() is not None:
                        claim.step = StartStep.ROUTING
                        routing.result()
        finally:
            for task in (ready, watch):
                task.cancel()
            await asyncio.gather(ready, watch, return_exceptions=True)
        if ready.done() and not ready.cancelled():
            ready.result()
            return
        watch.result()

    async def _watch_alive(self, container_id: str) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            info = await self._runtime.inspect(container_id)
            if info is None or not info.running:
                raise Unable(_EXITED)

    async def _undo_start(self, claim: _Claim, *, route_tried: bool) -> None:
        """Remove what a failed start created; never raises (the start's error matters)."""
        if route_tried and claim.url_id is not None:
            try:
                await self._routes.remove(urlpath(claim.user, claim.url_id))
            except Exception as exc:  # the reconciler removes it later
                log.warning("session.undo_route_failed", url_id=claim.url_id, error=str(exc))
        if claim.container_id is not None:
            try:
                await self._runtime.remove(claim.container_id)
            except Exception as exc:  # the reconciler removes it later
                log.warning(
                    "session.undo_container_failed",
                    container=claim.container_id[:12],
                    error=str(exc),
                )

    # ----------------------------------------------------------------- stop
    async def stop(self, user: str, url_id: str) -> None:
        """Stop the user's session ``url_id``: its route first, then its container.

        ``NotFound`` for a session that is not the user's. If the proxy cannot be reached
        the container is left running (``Unavailable``), so that no route can ever outlive
        its container and reach whatever gets the same host port next.
        """
        await self._stop(await self._find(url_id, user), user, StopReason.USER)

    async def stop_any(
        self, url_id: str, *, actor: str = SYSTEM_ACTOR, reason: StopReason = StopReason.ADMIN
    ) -> None:
        """Stop session ``url_id`` whoever owns it (for admins, or the service itself), and
        record it as done by ``actor`` for ``reason``."""
        await self._stop(await self._find(url_id, None), actor, reason)

    async def stop_outside_groups(self, user: str, groups: Collection[str]) -> list[str]:
        """Stop ``user``'s sessions started through a grant to a hub group they are not in
        (any longer), as an administrator's stop (``StopReason.ADMIN``); returns their url
        ids. A session whose grant is gone altogether is left to its owner, as a revoked
        grant's is. ``Unavailable`` when the database or the engine cannot be reached."""
        running = [s for s in await self.list_for_user(user) if s.container_id is not None]
        unknown = [s.mapping_id for s in running if s.mapping_id not in self._grant_groups]
        if unknown and self._unit_of_work is not None:
            if len(self._grant_groups) > _MAX_KNOWN_GRANT_GROUPS:
                self._grant_groups.clear()
            async with self._unit_of_work() as uow:
                for mapping_id in unknown:
                    try:
                        found = await uow.grants.get_group(mapping_id)
                    except NotFound:
                        self._grant_groups[mapping_id] = None
                    else:
                        self._grant_groups[mapping_id] = found.group
        stopped: list[str] = []
        for session in running:
            group = self._grant_groups.get(session.mapping_id)
            if group is None or group in groups:
                continue
            log.info("session.group_left", user=user, group=group, url_id=session.url_id)
            try:
                await self.stop_any(session.url_id, reason=StopReason.ADMIN)
            except (NotFound, Conflict):
                continue  # stopped, or being stopped, meanwhile
            stopped.append(session.url_id)
        return stopped

    async def stop_for(self, session: Session, reason: StopReason) -> None:
        """Stop ``session`` (as listed) for ``reason``, route first; ``Conflict`` when a start
        or stop of its grant is under way. Done by the service itself (the culler)."""
        await self._stop(session, SYSTEM_ACTOR, reason)

    async def _stop(self, session: Session, actor: str, reason: StopReason) -> None:
        if session.container_id is None:
            raise Conflict("the application is still starting; stop it once it runs")
        claim = _Claim(SessionState.STOPPING, session.user, session.mapping_id, session.url_id)
        claim.image = session.image
        claim.container_id = session.container_id
        await self.wait_maintenance(session.user, session.mapping_id)
        busy = Conflict("the application is being started or stopped already")
        with self._claimed(claim) as acquired:
            if not acquired:
                raise busy
            async with self._shared_claim(claim, busy):
                if self.stop_log is not None:
                    self.stop_log.note(session, reason)
                try:
                    await self._remove(session)
                except BaseException:
                    if self.stop_log is not None:
                        self.stop_log.cancel(session.url_id)
                    raise
        log.info("session.stopped", user=session.user, url_id=session.url_id)
        await self.record_stop(session, reason, actor=actor)
        for stopped in self._stopped:
            try:
                await stopped(session.url_id)
            except Exception:
                # The session is gone either way; what hangs off it is swept another time.
                log.exception("session.stop_listener_failed", url_id=session.url_id)

    async def record_stop(
        self, session: Session, reason: StopReason, *, actor: str = SYSTEM_ACTOR
    ) -> None:
        """Record why ``session`` ended: for its user (the stop log) and in the audit trail
        (a ``cull`` when its idle time or lifetime ran out, else a ``stop``)."""
        if self.stop_log is not None:
            await self.stop_log.record(session, reason)
        culled = reason in (StopReason.IDLE, StopReason.LIFETIME)
        self.audit.record(
            actor,
            AuditAction.CULL if culled else AuditAction.STOP,
            session.url_id,
            {"owner": session.user, "image": session.image, "reason": reason.value},
        )

    def on_stopped(self, callback: Callable[[str], Awaitable[None]]) -> None:
        """Call ``callback(url_id)`` after this service stops a session (user or admin)."""
        self._stopped.append(callback)

    async def _remove(self, session: Session) -> None:
        await self._routes.remove(session.urlpath)
        if session.container_id is not None:
            await self._runtime.remove(session.container_id)

    # ----------------------------------------------------------------- shared with the reconciler
    def route_for(self, info: ContainerInfo) -> Route | None:
        """The route a running container of ours should have (None: not ours, or no port)."""
        session = session_from_container(info, self.realm)
        if session is None or not info.running or info.host_port is None:
            return None
        if self.access is AccessMode.GATED:
            assert self._gate_url is not None
            target = self._gate_url
        else:
            target = f"http://{self._reach_host(info)}:{info.host_port}"
        return Route(
            path=session.urlpath,
            target=target,
            user=session.user,
            url_id=session.url_id,
            extra={ROUTE_REALM: self.realm},
        )

    def is_ours(self, route: Route) -> bool:
        """Whether a route (already tagged as this product's) belongs to this realm."""
        return route.extra.get(ROUTE_REALM, self.realm) == self.realm

    def busy(self, user: str, mapping_id: str, url_id: str | None = None) -> bool:
        """Whether a start or stop of this grant (or of session ``url_id``) is in progress."""
        if (user, mapping_id) in self._claims:
            return True
        return url_id is not None and any(c.url_id == url_id for c in self._claims.values())

    def busy_url_ids(self) -> frozenset[str]:
        return frozenset(c.url_id for c in self._claims.values() if c.url_id is not None)

    @contextlib.contextmanager
    def maintenance(self, user: str, mapping_id: str) -> Iterator[bool]:
        """Hold a grant while the reconciler repairs it; yields False if it is busy.

        A start or stop arriving meanwhile waits for the repair to end instead of failing.
        """
        with self._claimed(_Claim(None, user, mapping_id)) as acquired:
            yield acquired

    @contextlib.asynccontextmanager
    async def _shared_claim(self, claim: _Claim, busy: Conflict) -> AsyncIterator[None]:
        """Hold the grant for every replica too, or raise ``busy`` when another one does."""
        claims = self._start_claims
        if claims is None:
            yield
            return
        now = self._wall_clock()
        holder = self._claim_holder
        if not await claims.claim(
            claim.user, claim.mapping_id, holder=holder, now=now, until=now + self._claim_ttl
        ):
            raise busy
        renewing = asyncio.create_task(self._renew_claim(claims, claim, holder))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await asyncio.shield(claims.release(claim.user, claim.mapping_id, holder=holder))
            except RemoteAppError as exc:
                # The database is away: released as soon as it is back (or it lapses).
                log.warning("session.claim_not_released", user=claim.user, error=exc.message)
                retry = asyncio.create_task(self._release_later(claims, claim, holder))
                self._releasing.add(retry)
                retry.add_done_callback(self._releasing.discard)

    async def _release_later(self, claims: StartClaims, claim: _Claim, holder: str) -> None:
        """Try to release a claim every second until it is released or would have lapsed."""
        for _ in range(int(self._claim_ttl)):
            await asyncio.sleep(1.0)
            try:
                await claims.release(claim.user, claim.mapping_id, holder=holder)
            except RemoteAppError:
                continue
            return

    async def _renew_claim(self, claims: StartClaims, claim: _Claim, holder: str) -> None:
        """Keep the claim alive while its work runs (cancelled when it ends)."""
        while True:
            await asyncio.sleep(self._claim_ttl / 3)
            try:
                renewed = await claims.renew(
                    claim.user,
                    claim.mapping_id,
                    holder=holder,
                    until=self._wall_clock() + self._claim_ttl,
                )
            except RemoteAppError as exc:
                log.warning("session.claim_not_renewed", user=claim.user, error=exc.message)
                continue
            if not renewed:
                log.warning("session.claim_lost", user=claim.user, mapping_id=claim.mapping_id)
                return

    async def claimed_elsewhere(self) -> frozenset[SessionKey]:
        """The grants any replica is starting or stopping (empty without shared claims)."""
        if self._start_claims is None:
            return frozenset()
        return frozenset(await self._start_claims.held(self._wall_clock()))

    @contextlib.contextmanager
    def _claimed(self, claim: _Claim) -> Iterator[bool]:
        key = (claim.user, claim.mapping_id)
        if key in self._claims:
            yield False
            return
        self._claims[key] = claim
        try:
            yield True
        finally:
            del self._claims[key]
            self._changed(claim.user)
            claim.done.set()

    async def wait_maintenance(self, user: str, mapping_id: str) -> None:
        """Wait while the reconciler holds this grant (a start or stop holds it for real)."""
        while True:
            claim = self._claims.get((user, mapping_id))
            if claim is None or claim.state is not None:
                return
            await claim.done.wait()

    def _reach_host(self, info: ContainerInfo) -> str:
        host = info.host_ip or self._publish_ip
        if host in _WILDCARD_HOSTS:
            host = "127.0.0.1"
        return f"[{host}]" if ":" in host else host


async def _group_grant_for(
    uow: UnitOfWork, user: str, mapping_id: str, groups: Collection[str]
) -> Grant | None:
    """Group grant ``mapping_id`` as ``user``'s, if they are in its group and known here."""
    try:
        group_grant = await uow.grants.get_group(mapping_id)
        if group_grant.group not in groups:
            return None
        return group_grant.for_user(await uow.users.get_by_name(user))
    except NotFound:
        return None


# Mapping ids whose group (or none) is remembered; a grant's group never changes.
_MAX_KNOWN_GRANT_GROUPS = 100_000


def _reason(error: RemoteAppError) -> str:
    """A failed start's reason as a metric label: the error's kind, from a fixed set."""
    return _REASONS.get(type(error).__name__, "error")


_REASONS = {
    "Unable": "unable",
    "Unavailable": "unavailable",
    "InvalidRequest": "invalid_request",
    "NotFound": "not_found",
    "Conflict": "conflict",
    "Forbidden": "forbidden",
    "Exists": "exists",
}
