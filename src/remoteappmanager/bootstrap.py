"""The composition root: builds adapters from settings (the only module that imports them)
and, in ``build``, wires every service of the running service once.

Nothing here connects at import time: engines connect on first use, the Docker client on
its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.db.engine import is_sqlite
from remoteappmanager.adapters.db.migrate import SchemaStatus
from remoteappmanager.adapters.db.repositories import SqlDatabase
from remoteappmanager.adapters.db.shared_state import (
    PostgresLeaderElection,
    SingleProcessElection,
    SqlControlStates,
    SqlLoginSessionRecords,
    SqlStartClaims,
)
from remoteappmanager.adapters.memory_shared_state import InMemoryControlStates
from remoteappmanager.adapters.observed import Observe
from remoteappmanager.domain.errors import Forbidden, InvalidRequest
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.ports.audit import EventStore
from remoteappmanager.ports.coordination import ControlStates, LeaderElection, StartClaims
from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.ports.login_sessions import LoginSessionRecords
from remoteappmanager.ports.probe import ReadinessProbe
from remoteappmanager.ports.remote_api import HubTokenIssuer, RemoteAppClient
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.ports.routes import RouteTable
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.ports.workspaces import HostPaths, Workspaces
from remoteappmanager.services.access import AccessService, demo_policy
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.admin import Administration
from remoteappmanager.services.applications import Applications, ImageMetadataCache
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.services.culling import Culler
from remoteappmanager.services.gate_access import GateAccess, ImageType
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import AuditedShares, Shares, SharingRules
from remoteappmanager.settings import Engine, Settings, SettingsError
from remoteappmanager.web.cookies import CookieSigner, cookie_key
from remoteappmanager.web.deps import HealthCheck, Resource, WebDeps
from remoteappmanager.web.login_sessions import LoginSessionStore
from remoteappmanager.web.metrics import Metrics

if TYPE_CHECKING:
    from remoteappmanager.web.gate.handler import Gate

__all__ = [
    "Database",
    "SchemaStatus",
    "build",
    "build_database",
    "build_hub_token_issuer",
    "build_remote_client",
    "build_runtime",
    "build_volume_guard",
    "initialise_database",
    "schema_head",
    "schema_status",
    "upgrade_database",
]


@dataclass(frozen=True, slots=True)
class Database:
    """The database as the rest of the program sees it: units of work, and an end."""

    location: str
    """Where it is, for messages (never the password)."""
    unit_of_work: UnitOfWorkFactory
    events: EventStore
    """The audit trail's store in this database."""
    ping: Callable[[], Awaitable[None]]
    """Reach the database once; ``Unavailable`` with the reason if it cannot be used."""
    close: Callable[[], Awaitable[None]]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def build_database(database_url: str, *, observe: Observe | None = None) -> Database:
    """The database behind an async SQLAlchemy URL (``Settings.database_url``); with
    ``observe``, each SQL statement's duration and outcome is reported to it."""
    return _database_of(SqlDatabase(database_url, observe=observe))


def _database_of(sql: SqlDatabase) -> Database:
    return Database(
        location=sql.location,
        unit_of_work=sql.unit_of_work,
        events=sql.events(),
        ping=sql.ping,
        close=sql.close,
    )


async def schema_status(database_url: str) -> SchemaStatus:
    """Where the database's schema stands against this code's migrations."""
    return await migrate.status(database_url)


async def upgrade_database(database_url: str) -> SchemaStatus:
    """Migrate the database to the newest schema (creating a SQLite file if needed)."""
    return await migrate.upgrade(database_url)


async def initialise_database(database_url: str) -> SchemaStatus:
    """Create the schema on a new database; ``Exists`` if one is there already."""
    return await migrate.initialise(database_url)


def schema_head() -> str:
    """The newest schema revision this code ships."""
    return migrate.head()


def build_runtime(settings: Settings, *, observe: Observe | None = None) -> ContainerRuntime:
    """The Docker engine (or Swarm manager, ``REMOTEAPP_ENGINE=swarm``) named by the
    settings (not contacted until first used)."""
    # Imported here so that the database tools never load aiodocker.
    from remoteappmanager.adapters.docker import AiodockerRuntime, tls_context
    from remoteappmanager.adapters.swarm import SwarmRuntime

    ssl_context = None
    if settings.docker_cert_path is not None and (
        settings.docker_tls_verify or (settings.docker_host or "").startswith("tcp://")
    ):
        ssl_context = tls_context(settings.docker_cert_path, settings.docker_tls_verify)
    if settings.engine is Engine.SWARM:
        # A task may wait for a node and pull its image before the application starts: the
        # same bound as for the application to answer.
        return SwarmRuntime(
            settings.docker_host,
            ssl_context,
            network=settings.swarm_network,
            start_timeout=settings.network_timeout,
            observe=observe,
        )
    return AiodockerRuntime(settings.docker_host, ssl_context, observe=observe)


def build_remote_client(service_url: str, token: str, *, timeout: float) -> RemoteAppClient:
    """A client of the REST API of the service at ``service_url``, as the token's owner."""
    # Imported here so that the other command-line tools never load it.
    from remoteappmanager.adapters.rest_client import AiohttpRemoteAppClient

    return AiohttpRemoteAppClient(service_url, token, timeout=timeout)


def build_hub_token_issuer(hub_url: str, *, timeout: float) -> HubTokenIssuer:
    """Creates API tokens by signing in to the JupyterHub at ``hub_url`` (its base URL)."""
    from remoteappmanager.adapters.rest_client import AiohttpHubTokenIssuer

    return AiohttpHubTokenIssuer(hub_url, timeout=timeout)


# How long the realm's container list is shared between requests: a page load or an API
# listing then costs no engine call, and a container that dies is noticed within this time.
SESSION_LISTING_TTL = 1.0
# How often a replica that does not lead tries to: a dead leader's jobs move within this long
# (plus the time the database takes to notice the connection is gone).
LEADER_RETRY_INTERVAL = 2.0


def build(
    settings: Settings,
    *,
    identity: IdentityProvider | None = None,
    database: Database | None = None,
    runtime: ContainerRuntime | None = None,
    routes: RouteTable | None = None,
    probe: ReadinessProbe | None = None,
    workspaces: Workspaces | None = None,
    host_paths: HostPaths | None = None,
    login_sessions: LoginSessionRecords | None = None,
    start_claims: StartClaims | None = None,
    control_states: ControlStates | None = None,
    election: LeaderElection | None = None,
    health_checks: Mapping[str, HealthCheck] | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> WebDeps:
    """The service, wired from the settings (nothing is contacted yet): every service the
    web application, the gate and the command line use, built here and nowhere else.

    The keyword arguments replace one port each, for demos, tests and benchmarks; everything
    else (the services, their caches and time-outs, the background jobs) stays the production
    wiring:

    - ``identity``: the hub; ``runtime``: the Docker engine; ``routes``: the proxy;
      ``probe``: the readiness probe; ``workspaces`` and ``host_paths``: the disk.
    - ``database``: the catalogue and the audit trail's store. Replicas share login sessions,
      start claims, who controls each shared session and the lead through the SQL database;
      with another ``database`` they are kept in this process unless ``login_sessions``,
      ``start_claims``, ``control_states`` or ``election`` are given.
    - ``health_checks``: replace the checks of these names (``database``, ``docker``,
      ``proxy``) or add others.
    - ``clock`` (wall-clock seconds: lifetimes, deadlines, records) and ``monotonic``
      (cache ages).

    Resources are opened in dependency order when the application starts and closed in the
    reverse order: the database, the Docker client, the proxy client, the readiness probe,
    the audit writer, the activity flush, then the leadership: while this process leads (on
    PostgreSQL one replica of the realm at a time; on SQLite always), it runs the reconciler
    (a first pass at once, then one every ``reconcile_interval`` seconds), the culler and the
    audit retention. It is cancelled and awaited first on shutdown, giving the lead up for
    another replica. The hub client is closed by the application itself.
    """
    # Imported here so that the database tools never load the web service's clients.
    from remoteappmanager.adapters.chp import ChpRouteTable
    from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
    from remoteappmanager.adapters.jupyterhub import HubIdentityProvider
    from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths

    _check_demo_volumes(settings)
    # Every call to the hub, the proxy, the engine and the database is timed for the metrics.
    metrics = Metrics()
    observe = metrics.observe_dependency
    if identity is None:
        if settings.jupyterhub_api_token is None:
            raise SettingsError(
                "JUPYTERHUB_API_TOKEN: required to run the service (the hub sets it)"
            )
        identity = HubIdentityProvider.from_settings(settings, observe=observe)
    if routes is None:
        proxy_token = settings.configproxy_auth_token
        if proxy_token is None:
            raise SettingsError(
                "CONFIGPROXY_AUTH_TOKEN: required to run the service (the proxy's API token)"
            )
        routes = ChpRouteTable(
            settings.configproxy_api_url, proxy_token.get_secret_value(), observe=observe
        )
    runtime = runtime or build_runtime(settings, observe=observe)
    probe = probe or AiohttpReadinessProbe()
    if database is None:
        sql = SqlDatabase(settings.database_url, observe=observe)
        database = _database_of(sql)
        login_sessions = login_sessions or SqlLoginSessionRecords(sql.engine, sql.location)
        start_claims = start_claims or SqlStartClaims(sql.engine, sql.location)
        control_states = control_states or SqlControlStates(sql.engine, sql.location)
        election = election or _leader_election(sql, settings)
    # A database given without them (tests, benchmarks): control states of this process alone.
    control_states = control_states or InMemoryControlStates()
    unit_of_work = database.unit_of_work
    audit = AuditTrail(database.events, retention_days=settings.event_retention_days, clock=clock)
    host_paths = host_paths or LocalHostPaths()
    volume_rules = settings.volume_rules
    activity = ActivityTracker(clock=clock)
    stop_log = StopLog(unit_of_work, activity, counter=metrics.count_stop, clock=clock)
    sessions = Sessions(
        runtime,
        routes,
        workspaces or DirectoryWorkspaces(settings.workspace_dir),
        host_paths,
        probe,
        realm=settings.realm,
        publish_ip=settings.publish_ip,
        network_timeout=settings.network_timeout,
        access=AccessMode(settings.container_access.value),
        gate_url=settings.effective_gate_url,
        unit_of_work=unit_of_work,
        listing_ttl=SESSION_LISTING_TTL,
        confinement=settings.confinement,
        volume_rules=volume_rules,
        start_rate_per_minute=settings.start_rate_per_minute,
        max_sessions_per_user=settings.max_sessions_per_user,
        clock=monotonic,
        workspace_uid_base=settings.workspace_uid_base,
        stop_log=stop_log,
        audit=audit,
        start_claims=start_claims,
        claim_holder=_process_name(),
        wall_clock=clock,
    )
    sessions.start_observer = metrics
    route_table = routes
    reconciler = Reconciler(runtime, routes, sessions, on_pass=metrics.observe_reconcile)
    culler = Culler(sessions, unit_of_work, activity, clock=clock)
    # One replica at a time repairs, culls and prunes; every one writes its own activity
    # and audit events.
    leadership = Leadership(
        election or SingleProcessElection(), retry_interval=LEADER_RETRY_INTERVAL
    )
    leadership.lead("reconciler", lambda: reconciler.run_forever(settings.reconcile_interval))
    leadership.lead("culler", lambda: culler.run_forever(settings.cull_interval))
    leadership.lead("audit-retention", audit.run_retention)
    applications = Applications(
        unit_of_work,
        sessions,
        ImageMetadataCache(runtime, clock=monotonic),
        activity=activity,
        clock=monotonic,
    )
    volumes = VolumeGuard(volume_rules, host_paths)
    shares = Shares(
        sessions,
        unit_of_work,
        rules=SharingRules(
            enabled=settings.sharing, links=settings.link_shares, control=settings.control_shares
        ),
        listener=AuditedShares(audit),
        controls=control_states,
        now=lambda: datetime.fromtimestamp(clock(), UTC),
    )
    gate_access = None
    if sessions.access is AccessMode.GATED:
        gate_access = GateAccess(
            sessions,
            unit_of_work,
            shares=shares,
            image_type=_image_type(applications),
            clock=monotonic,
        )

    async def docker_check() -> None:
        await sessions.list_all()

    async def proxy_check() -> None:
        await route_table.list()

    resources: list[Resource] = [
        _closing(database.close),
        _closing(runtime.close),
        _closing(routes.close),
        _closing(probe.close),
        # After the database (closed after it): its cancellation writes what is queued.
        _background(audit.run_forever, "audit-writer"),
        _background(
            lambda: activity.run_forever(unit_of_work, settings.activity_flush_interval),
            "activity",
        ),
        _background(leadership.run_forever, "leadership"),
    ]
    access = AccessService(
        unit_of_work,
        admin_group=settings.admin_group,
        auto_user_creation=settings.auto_user_creation,
        demo_applications=settings.demo_applications,
        access_scopes=settings.access_scopes,
        audit=audit,
    )
    login_store = LoginSessionStore(
        clock=clock,
        max_sessions_per_user=settings.max_login_sessions_per_user,
        records=login_sessions,
    )
    signer = CookieSigner(cookie_key(settings), clock=clock)
    gate: Gate | None = None
    if gate_access is not None:
        from remoteappmanager.web.gate.handler import build_gate

        gate = built = build_gate(
            settings,
            access=gate_access,
            signer=signer,
            store=login_store,
            identity=identity,
            identify=access,
            clock=clock,
            activity=activity,
        )
        # A sign-out or a change of shares closes the connections it ends at once.
        login_store.on_end(built.session_ended)
        shares.on_change(built.shares_changed)
        metrics.watch_gate(built.server.stats, lambda: len(built.server.upgrades))
    return WebDeps(
        settings=settings,
        identity=identity,
        uow_factory=unit_of_work,
        clock=clock,
        health_checks={
            "database": database.ping,
            "docker": docker_check,
            "proxy": proxy_check,
            **(health_checks or {}),
        },
        resources=resources,
        metrics=metrics,
        sessions=sessions,
        applications=applications,
        shares=shares,
        volumes=volumes,
        activity=activity,
        stop_log=stop_log,
        audit=audit,
        leadership=leadership,
        access=access,
        login_sessions=login_store,
        signer=signer,
        administration=Administration(
            unit_of_work,
            realm=settings.realm,
            sessions=sessions,
            applications=applications,
            volumes=volumes,
            audit=audit,
        ),
        gate_access=gate_access,
        gate=gate,
    )


def _image_type(applications: Applications) -> ImageType:
    """The type label of an image, as the catalogue's image cache knows it."""

    async def image_type(image: str) -> str | None:
        metadata = (await applications.image_state(image)).metadata
        return None if metadata is None else str(metadata.type)

    return image_type


def _leader_election(sql: SqlDatabase, settings: Settings) -> LeaderElection:
    """On PostgreSQL replicas elect one leader per realm; a SQLite file has one process."""
    if is_sqlite(settings.database_url):
        return SingleProcessElection()
    return PostgresLeaderElection(sql.engine, f"remoteapp leader of realm {settings.realm}")


def _process_name() -> str:
    """Names this process among the replicas (start claims record who holds them)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def _check_demo_volumes(settings: Settings) -> None:
    """Demo grants are written at sign-in: their volumes must pass the rules from the start."""
    rules = settings.volume_rules
    for image, overrides in settings.demo_applications.items():
        try:
            volume = demo_policy(image, overrides).volume
            if volume is not None:
                rules.check(volume)
        except (InvalidRequest, Forbidden) as exc:
            raise SettingsError(f"REMOTEAPP_DEMO_APPLICATIONS: {image}: {exc.message}") from None


def build_volume_guard(settings: Settings) -> VolumeGuard:
    """The volume rules of the settings, judged on this machine's paths."""
    from remoteappmanager.adapters.workspaces import LocalHostPaths

    return VolumeGuard(settings.volume_rules, LocalHostPaths())


def _closing(close: Callable[[], Awaitable[None]]) -> Resource:
    """A resource that needs nothing at start and ``close()`` at the end."""

    @contextlib.asynccontextmanager
    async def resource() -> AsyncIterator[object]:
        try:
            yield None
        finally:
            await close()

    return resource


def _background(work: Callable[[], Awaitable[None]], name: str) -> Resource:
    """A task running for the life of the application, cancelled and awaited at its end."""

    @contextlib.asynccontextmanager
    async def resource() -> AsyncIterator[object]:
        task = asyncio.ensure_future(work())
        task.set_name(name)
        try:
            yield task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return resource
