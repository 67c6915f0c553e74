"""The aiohttp application made of the wired service (``WebDeps``): middlewares, routes under
``{svc}``, and the lifespans of its resources."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from remoteappmanager import __version__
from remoteappmanager.web import api_admin, api_events, api_shares, api_user, auth, pages
from remoteappmanager.web.admission import admission_middleware, setup_admission
from remoteappmanager.web.api import AnswerCache, ApiRegistry, openapi_handler
from remoteappmanager.web.csrf import csrf_middleware
from remoteappmanager.web.deps import Resource, WebDeps
from remoteappmanager.web.errors import error_middleware
from remoteappmanager.web.gate.handler import setup_gate
from remoteappmanager.web.health import CachedHealth, health_handler
from remoteappmanager.web.keys import (
    ACCESS,
    ADMIN,
    API_REGISTRY,
    APPLICATION_LISTINGS,
    APPLICATIONS,
    DEPS,
    HEALTH,
    HEALTH_CHECKS,
    IDENTITY,
    LOGIN_SESSIONS,
    METRICS,
    SESSIONS,
    SETTINGS,
    SHARES,
    SIGNER,
    URLS,
)
from remoteappmanager.web.logs import (
    add_request_id_header,
    request_context_middleware,
)
from remoteappmanager.web.metrics import (
    loop_lag_lifespan,
    metrics_handler,
    metrics_middleware,
)
from remoteappmanager.web.origins import app_hosts_middleware
from remoteappmanager.web.urls import ServiceUrls

# How often login sessions ended through another replica are looked for (and recent uses
# written): a sign-out there cuts this replica's connections within about this long.
LOGIN_SESSION_SYNC_INTERVAL = 1.0
_API_DESCRIPTION = (
    "Lists are `{offset, total, items: {id: object}, identifiers: [id...]}`; a create answers "
    "201 with an empty body and a `Location` ending in `<id>/`; errors are "
    "`{type, message}`. Someone else's resource is 404."
)


def create_app(deps: WebDeps) -> web.Application:
    """The application, wired to ``deps``; nothing is opened until it starts."""
    settings = deps.settings
    urls = ServiceUrls.from_settings(settings)
    # Outermost first: the request id and metrics see every answer, errors included; the
    # error middleware sees what CSRF checks and handlers raise.
    app = web.Application(
        middlewares=[
            request_context_middleware,
            metrics_middleware,
            admission_middleware,
            error_middleware,
            app_hosts_middleware,
            csrf_middleware,
        ]
    )
    app[DEPS] = deps
    app[SETTINGS] = settings
    app[URLS] = urls
    setup_admission(app)
    app[IDENTITY] = deps.identity
    app[ACCESS] = deps.access
    app[LOGIN_SESSIONS] = deps.login_sessions
    app[SIGNER] = deps.signer
    app[METRICS] = deps.metrics
    checks = {"hub": deps.identity.check, **deps.health_checks}
    app[HEALTH_CHECKS] = checks
    app[HEALTH] = CachedHealth(checks, clock=deps.clock)
    app[SESSIONS] = deps.sessions
    app[SHARES] = deps.shares
    app[APPLICATIONS] = deps.applications
    app[APPLICATION_LISTINGS] = AnswerCache()
    app[ADMIN] = deps.administration
    app[API_REGISTRY] = ApiRegistry(
        title="SimPhoNy-Remote", version=__version__, description=_API_DESCRIPTION
    )
    api_user.register(app[API_REGISTRY])
    api_admin.register(app[API_REGISTRY])
    api_events.register(app[API_REGISTRY])
    api_shares.register(app[API_REGISTRY])

    for resource in deps.resources:
        app.cleanup_ctx.append(_lifespan_of(resource))
    app.cleanup_ctx.append(_identity_lifespan)
    if app[LOGIN_SESSIONS].persistent:
        app.cleanup_ctx.append(_login_sessions_syncing)
    app[METRICS].watch_leadership(deps.leadership)
    app.cleanup_ctx.append(loop_lag_lifespan)
    app.on_response_prepare.append(add_request_id_header)
    app.on_response_prepare.append(_api_not_cacheable)
    app.on_response_prepare.append(auth.maintain_cookies)

    prefix = urls.prefix
    app.router.add_get(prefix, pages.home, name="home")
    app.router.add_get(prefix + pages.ADMIN_PATH, pages.admin, name="admin")
    app.router.add_get(prefix + pages.ADMIN_PATH.rstrip("/"), pages.add_admin_slash)
    pages.add_static_routes(app)
    if prefix != "/":
        app.router.add_get(prefix.rstrip("/"), pages.add_slash)
    app.router.add_get(urls.callback, auth.oauth_callback, name="oauth_callback")
    app.router.add_get(urls.logout, auth.logout_page, name="logout_page")
    app.router.add_post(urls.logout, auth.logout, name="logout")
    app.router.add_get(urls.health, health_handler, name="health")
    app.router.add_get(urls.metrics, metrics_handler, name="metrics")
    app[API_REGISTRY].install(app.router, urls.api)
    app.router.add_get(
        urls.api + "openapi.json",
        openapi_handler(app[API_REGISTRY].document(urls.api)),
        name="openapi",
    )
    # Gated mode: /user/<name>/containers/<url_id>/... is authorized and forwarded here.
    setup_gate(app, deps)
    return app


def _lifespan_of(
    resource: Resource,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifespan(_app: web.Application) -> AsyncIterator[None]:
        async with resource():
            yield

    return lifespan


async def _login_sessions_syncing(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.ensure_future(app[LOGIN_SESSIONS].syncing(LOGIN_SESSION_SYNC_INTERVAL))
    task.set_name("login_sessions")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _identity_lifespan(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[HEALTH].close()
    await app[IDENTITY].close()


async def _api_not_cacheable(request: web.Request, response: web.StreamResponse) -> None:
    if request.app[URLS].is_api(request.path):
        response.headers["Cache-Control"] = "no-store"
