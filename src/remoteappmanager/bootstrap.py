"""The composition root: builds adapters from settings; the only module that imports them.

Nothing here connects at import time: engines connect on first use, the Docker client on
its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

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
from remoteappmanager.adapters.observed import Observe
from remoteappmanager.domain.errors import Forbidden, InvalidRequest
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.ports.audit import EventStore
from remoteappmanager.ports.coordination import LeaderElection
from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.ports.probe import ReadinessProbe
from remoteappmanager.ports.remote_api import HubTokenIssuer, RemoteAppClient
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.ports.routes import RouteTable
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.ports.workspaces import HostPaths, Workspaces
from remoteappmanager.services.access import demo_policy
from remoteappmanager.services.activity import (
    ActivityTracker,
    StopListener,
    StopLog,
    no_stop_listener,
)
from remoteappmanager.services.applications import Applications, ImageMetadataCache
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.services.culling import Culler
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import AuditedShares, Shares
from remoteappmanager.settings import Engine, Settings, SettingsError
from remoteappmanager.web.deps import Resource, WebDeps, sharing_rules
from remoteappmanager.web.metrics import Metrics

__all__ = [
    "Database",
    "SchemaStatus",
    "build_database",
    "build_hub_token_issuer",
    "build_remote_client",
    "build_runtime",
    "build_volume_guard",
    "build_web_deps",
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


def build_web_deps(
    settings: Settings,
    *,
    identity: IdentityProvider | None = None,
    runtime: ContainerRuntime | None = None,
    routes: RouteTable | None = None,
    probe: ReadinessProbe | None = None,
    workspaces: Workspaces | None = None,
    host_paths: HostPaths | None = None,
    stop_listener: StopListener = no_stop_listener,
) -> WebDeps:
    """Everything the web service runs on, wired from the settings (nothing is contacted yet).

    The keyword arguments replace one external system each (the hub, the engine, the proxy,
    the readiness probe, the disk), for demos, tests and benchmarks; the rest of the wiring
    stays the production one.

    Resources are opened in dependency order when the application starts and closed in the
    reverse order: the database, the Docker client, the proxy client, the readiness probe,
    then the leadership: while this process leads (on PostgreSQL one replica of the realm
    at a time; on SQLite always), it runs the reconciler (a first pass at once, then one
    every ``reconcile_interval`` seconds). It is cancelled and awaited first on shutdown,
    giving the lead up for another replica. Login sessions, start claims and who controls
    each shared session live in the database, shared by every replica. The hub client is
    closed by the application itself.
    """
    # Imported here so that the database tools never load the web service's clients.
    from remoteappmanager.adapters.chp import ChpRouteTable
    from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
    from remoteappmanager.adapters.jupyterhub import HubIdentityProvider
    from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths

    settings.require_service_settings()
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
        assert proxy_token is not None  # checked by require_service_settings
        routes = ChpRouteTable(
            settings.configproxy_api_url, proxy_token.get_secret_value(), observe=observe
        )
    runtime = runtime or build_runtime(settings, observe=observe)
    probe = probe or AiohttpReadinessProbe()

    sql = SqlDatabase(settings.database_url, observe=observe)
    database = _database_of(sql)
    audit = AuditTrail(database.events, retention_days=settings.event_retention_days)
    host_paths = host_paths or LocalHostPaths()
    volume_rules = settings.volume_rules
    activity = ActivityTracker()
    stop_log = StopLog(database.unit_of_work, activity, listener=stop_listener)
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
        unit_of_work=database.unit_of_work,
        listing_ttl=SESSION_LISTING_TTL,
        confinement=settings.confinement,
        volume_rules=volume_rules,
        start_rate_per_minute=settings.start_rate_per_minute,
        max_sessions_per_user=settings.max_sessions_per_user,
        workspace_uid_base=settings.workspace_uid_base,
        stop_log=stop_log,
        audit=audit,
        start_claims=SqlStartClaims(sql.engine, sql.location),
        claim_holder=_process_name(),
    )
    route_table = routes
    reconciler = Reconciler(runtime, routes, sessions, on_pass=metrics.observe_reconcile)
    culler = Culler(sessions, database.unit_of_work, activity)
    # One replica at a time repairs, culls and prunes; every one writes its own activity
    # and audit events.
    leadership = Leadership(_leader_election(sql, settings), retry_interval=LEADER_RETRY_INTERVAL)
    leadership.lead("reconciler", lambda: reconciler.run_forever(settings.reconcile_interval))
    leadership.lead("culler", lambda: culler.run_forever(settings.cull_interval))
    leadership.lead("audit-retention", audit.run_retention)
    applications = Applications(
        database.unit_of_work, sessions, ImageMetadataCache(runtime), activity=activity
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
            lambda: activity.run_forever(database.unit_of_work, settings.activity_flush_interval),
            "activity",
        ),
        _background(leadership.run_forever, "leadership"),
    ]
    return WebDeps(
        settings=settings,
        identity=identity,
        uow_factory=database.unit_of_work,
        health_checks={
            "database": database.ping,
            "docker": docker_check,
            "proxy": proxy_check,
        },
        resources=resources,
        sessions=sessions,
        applications=applications,
        volumes=VolumeGuard(volume_rules, host_paths),
        metrics=metrics,
        activity=activity,
        stop_log=stop_log,
        audit=audit,
        login_sessions=SqlLoginSessionRecords(sql.engine, sql.location),
        leadership=leadership,
        shares=Shares(
            sessions,
            database.unit_of_work,
            rules=sharing_rules(settings),
            listener=AuditedShares(audit),
            controls=SqlControlStates(sql.engine, sql.location),
        ),
    )


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
