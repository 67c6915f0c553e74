"""What the web application is built from: the services and ports the composition root wires."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.ports.login_sessions import LoginSessionRecords
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.applications import Applications
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import Shares, SharingRules
from remoteappmanager.settings import Settings
from remoteappmanager.web.metrics import Metrics

HealthCheck = Callable[[], Awaitable[None]]
"""Returns when a dependency is usable, raises (preferably ``Unavailable``) when it is not."""

Resource = Callable[[], AbstractAsyncContextManager[object]]
"""Opens a resource for the life of the application (engine, client, background task)."""


@dataclass(frozen=True, slots=True)
class WebDeps:
    """Everything ``web.app.create_app`` needs; built by the composition root (or a test).

    - ``identity``: the hub (or a fake); closed by the application on shutdown.
    - ``uow_factory``: units of work over the catalogue (sign-in provisioning uses it).
    - ``clock``: wall-clock seconds, for session and cookie lifetimes.
    - ``health_checks``: named dependency checks shown by ``{svc}health``; the hub's
      ``identity.check`` is added as ``"hub"`` unless a check of that name is given.
    - ``resources``: entered in order when the application starts (one ``cleanup_ctx`` each)
      and closed in reverse order when it stops.
    - ``sessions``: starting, stopping and finding running applications (None: an application
      without containers, whose container routes answer ``Unavailable``).
    - ``applications``: the user's grants with image metadata and sessions (the user page
      and ``api/v1/applications/``); set whenever ``sessions`` is.
    - ``volumes``: the volume rules grants are checked against (None: no grant may mount a
      host folder).
    - ``metrics``: the service's Prometheus registry; the composition root hands the
      adapters and the reconciler to it before the application exists.
    - ``activity``: sessions' last client input (the gate reports it); None: not tracked.
    - ``stop_log``: why sessions ended (the same one ``sessions`` records to).
    - ``audit``: the audit trail the services record in and the admin API lists (None: an
      application that records nothing and answers ``Unavailable`` for the listing).
    - ``login_sessions``: the login sessions every replica shares (None: kept in this
      process's memory alone).
    - ``leadership``: whether this replica leads, for health and metrics (None: it runs alone
      and its periodic jobs are not put under a leadership).
    - ``shares``: sharing running applications (None with ``sessions``: built from the
      settings' sharing rules, without an audit listener).
    """

    settings: Settings
    identity: IdentityProvider
    uow_factory: UnitOfWorkFactory
    clock: Callable[[], float] = time.time
    health_checks: Mapping[str, HealthCheck] = field(default_factory=dict)
    resources: Sequence[Resource] = ()
    sessions: Sessions | None = None
    applications: Applications | None = None
    volumes: VolumeGuard | None = None
    metrics: Metrics = field(default_factory=Metrics)
    activity: ActivityTracker | None = None
    stop_log: StopLog | None = None
    audit: AuditTrail | None = None
    login_sessions: LoginSessionRecords | None = None
    leadership: Leadership | None = None
    shares: Shares | None = None


def sharing_rules(settings: Settings) -> SharingRules:
    """The site's sharing switches, from the settings."""
    return SharingRules(
        enabled=settings.sharing, links=settings.link_shares, control=settings.control_shares
    )
