"""What the web application is built from: the services and ports the composition root wires."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services.access import AccessService
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.admin import Administration
from remoteappmanager.services.applications import Applications
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.services.gate_access import GateAccess
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import Shares
from remoteappmanager.settings import Settings
from remoteappmanager.web.cookies import CookieSigner
from remoteappmanager.web.login_sessions import LoginSessionStore
from remoteappmanager.web.metrics import Metrics

if TYPE_CHECKING:  # the gate's handler reads WebDeps itself
    from remoteappmanager.web.gate.handler import Gate

HealthCheck = Callable[[], Awaitable[None]]
"""Returns when a dependency is usable, raises (preferably ``Unavailable``) when it is not."""

Resource = Callable[[], AbstractAsyncContextManager[object]]
"""Opens a resource for the life of the application (engine, client, background task)."""


@dataclass(frozen=True, slots=True)
class WebDeps:
    """The service, wired: everything ``web.app.create_app`` turns into an aiohttp
    application, built by the composition root (``bootstrap.build``) and nowhere else.

    - ``identity``: the hub; closed by the application on shutdown.
    - ``uow_factory``: units of work over the catalogue.
    - ``clock``: wall-clock seconds, for session and cookie lifetimes.
    - ``health_checks``: named dependency checks shown by ``{svc}health``; the hub's
      ``identity.check`` is added as ``"hub"`` unless a check of that name is given.
    - ``resources``: entered in order when the application starts (one ``cleanup_ctx`` each)
      and closed in reverse order when it stops.
    - ``metrics``: the service's Prometheus registry, which the adapters, the sessions, the
      stop log and the reconciler already report to.
    - ``sessions``, ``applications``, ``shares``: running applications, the users' grants
      with their images and sessions, sharing them.
    - ``volumes``: the volume rules grants are checked against.
    - ``activity``, ``stop_log``: sessions' last client input (the gate reports it) and why
      sessions ended (the same log ``sessions`` records to).
    - ``audit``: the audit trail the services record in and the admin API lists.
    - ``leadership``: whether this replica leads, for health and metrics.
    - ``access``: who a hub user is here (sign-in provisioning, admin flag, grants).
    - ``login_sessions``: the browsers' sign-in sessions (shared by the replicas through the
      database, or kept in this process).
    - ``signer``: signs and checks the service's cookies.
    - ``administration``: the admin API's and page's use cases.
    - ``gate_access``: who may reach which running application through the gate; None in
      direct mode, where there is no gate.
    - ``gate``: the gate itself (its listener starts with the application); None in direct
      mode.
    """

    settings: Settings
    identity: IdentityProvider
    uow_factory: UnitOfWorkFactory
    clock: Callable[[], float]
    health_checks: Mapping[str, HealthCheck]
    resources: Sequence[Resource]
    metrics: Metrics
    sessions: Sessions
    applications: Applications
    shares: Shares
    volumes: VolumeGuard
    activity: ActivityTracker
    stop_log: StopLog
    audit: AuditTrail
    leadership: Leadership
    access: AccessService
    login_sessions: LoginSessionStore
    signer: CookieSigner
    administration: Administration
    gate_access: GateAccess | None
    gate: Gate | None
