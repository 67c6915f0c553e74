"""Every typed key into the application and into requests, in one place."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from remoteappmanager.ports.identity import IdentityProvider
    from remoteappmanager.services.access import AccessService
    from remoteappmanager.services.admin import Administration
    from remoteappmanager.services.applications import Applications, UserApplication
    from remoteappmanager.services.sessions import Sessions
    from remoteappmanager.services.shares import Shares
    from remoteappmanager.settings import Settings
    from remoteappmanager.web.api import AnswerCache, ApiRegistry
    from remoteappmanager.web.assets import PageAssets
    from remoteappmanager.web.auth import RequestAuth
    from remoteappmanager.web.cookies import CookieSigner
    from remoteappmanager.web.deps import HealthCheck, WebDeps
    from remoteappmanager.web.gate.handler import Gate
    from remoteappmanager.web.health import CachedHealth
    from remoteappmanager.web.login_sessions import LoginSessionStore
    from remoteappmanager.web.metrics import Metrics
    from remoteappmanager.web.urls import ServiceUrls

# ---------------------------------------------------------------- application
DEPS: web.AppKey[WebDeps] = web.AppKey("deps")
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
URLS: web.AppKey[ServiceUrls] = web.AppKey("urls")
IDENTITY: web.AppKey[IdentityProvider] = web.AppKey("identity")
ACCESS: web.AppKey[AccessService] = web.AppKey("access")
LOGIN_SESSIONS: web.AppKey[LoginSessionStore] = web.AppKey("login_sessions")
SIGNER: web.AppKey[CookieSigner] = web.AppKey("signer")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
HEALTH_CHECKS: web.AppKey[dict[str, HealthCheck]] = web.AppKey("health_checks")
# ``{svc}health``'s answer, probed at most once per its TTL.
HEALTH: web.AppKey[CachedHealth] = web.AppKey("health")
GATE: web.AppKey[Gate] = web.AppKey("gate")
# Reads answered at once (``web.admission``); absent when unbounded.
ADMISSION: web.AppKey[asyncio.Semaphore] = web.AppKey("admission")
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
APPLICATIONS: web.AppKey[Applications] = web.AppKey("applications")
# Sharing running applications.
SHARES: web.AppKey[Shares] = web.AppKey("shares")
# Each user's serialised ``applications/`` answer, reused while it would come out the same.
APPLICATION_LISTINGS: web.AppKey[AnswerCache[list[UserApplication]]] = web.AppKey(
    "application_listings"
)
# The admin API's and page's use cases.
ADMIN: web.AppKey[Administration] = web.AppKey("admin")
# The REST API's routes; a module adds its own with ``register(app[API_REGISTRY])``.
API_REGISTRY: web.AppKey[ApiRegistry] = web.AppKey("api_registry")
# Templates and static files of the pages, read from the package at start.
PAGE_ASSETS: web.AppKey[PageAssets] = web.AppKey("page_assets")

# ---------------------------------------------------------------- request
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
# Who the request is from, once worked out (None: anonymous); absent until then.
AUTH: web.RequestKey[RequestAuth | None] = web.RequestKey("auth")
# The browser presented a session cookie that is no longer good: it is cleared on the way out.
STALE_SESSION: web.RequestKey[bool] = web.RequestKey("stale_session")
