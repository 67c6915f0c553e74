"""The aiohttp application: middlewares, routes under ``{svc}``, lifecycle, and ``serve``
(which runs an application built from given dependencies; the command line builds them)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web
from yarl import URL

from remoteappmanager import __version__
from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.services.access import AccessService
from remoteappmanager.services.admin import Administration
from remoteappmanager.services.audit import DISCARD
from remoteappmanager.services.shares import AuditedShares, Shares
from remoteappmanager.web import api_admin, api_events, api_shares, api_user, auth, pages
from remoteappmanager.web.admission import (
    admission_middleware,
    setup_admission,
    tune_garbage_collector,
)
from remoteappmanager.web.api import AnswerCache, ApiRegistry, openapi_handler
from remoteappmanager.web.cookies import CookieSigner, cookie_key
from remoteappmanager.web.csrf import csrf_middleware
from remoteappmanager.web.deps import Resource, WebDeps, sharing_rules
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
from remoteappmanager.web.listening import BIND_ERRORS, SERVICE_SETTING, listen_failure
from remoteappmanager.web.login_sessions import LoginSessionStore
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

log = structlog.get_logger(__name__)

# Seconds in-flight requests get to finish once a stop is asked for.
SHUTDOWN_TIMEOUT = 10.0
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
    app[ACCESS] = AccessService(
        deps.uow_factory,
        admin_group=settings.admin_group,
        auto_user_creation=settings.auto_user_creation,
        demo_applications=settings.demo_applications,
        access_scopes=settings.access_scopes,
        audit=deps.audit or DISCARD,
    )
    app[LOGIN_SESSIONS] = LoginSessionStore(
        clock=deps.clock,
        max_sessions_per_user=settings.max_login_sessions_per_user,
        records=deps.login_sessions,
    )
    app[SIGNER] = CookieSigner(cookie_key(settings), clock=deps.clock)
    app[METRICS] = deps.metrics
    if deps.stop_log is not None:
        deps.stop_log.counter = app[METRICS].count_stop
    checks = {"hub": deps.identity.check, **deps.health_checks}
    app[HEALTH_CHECKS] = checks
    app[HEALTH] = CachedHealth(checks, clock=deps.clock)
    if deps.sessions is not None:
        app[SESSIONS] = deps.sessions
        deps.sessions.start_observer = app[METRICS]
        app[SHARES] = deps.shares or Shares(
            deps.sessions,
            deps.uow_factory,
            rules=sharing_rules(settings),
            listener=AuditedShares(deps.audit) if deps.audit is not None else None,
        )
    if deps.applications is not None:
        app[APPLICATIONS] = deps.applications
        app[APPLICATION_LISTINGS] = AnswerCache()
    app[ADMIN] = Administration(
        deps.uow_factory,
        realm=deps.sessions.realm if deps.sessions is not None else settings.realm,
        sessions=deps.sessions,
        applications=deps.applications,
        volumes=deps.volumes,
        audit=deps.audit or DISCARD,
    )
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
    if deps.leadership is not None:
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


def serve(deps: WebDeps) -> None:
    """Run the service built from ``deps`` on the host and port of ``JUPYTERHUB_SERVICE_URL``
    until SIGINT/SIGTERM.

    The dependencies come from the composition root (``bootstrap``), called by the command
    line. uvloop is used when installed. On a stop signal the server stops accepting, gives
    in-flight requests ``SHUTDOWN_TIMEOUT`` seconds, then closes every resource in reverse
    order.
    """
    settings = deps.settings
    url = URL(settings.jupyterhub_service_url)
    host = url.host or "127.0.0.1"
    port = url.port or 80
    log.info("service_starting", host=host, port=port, prefix=settings.jupyterhub_service_prefix)
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_run_until_stopped(create_app(deps), host, port))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except OSError as exc:
        # Binding the service's own port (the gate's is explained where it binds).
        if exc.errno not in BIND_ERRORS:
            raise
        raise Unavailable(listen_failure("the service", host, port, exc, SERVICE_SETTING)) from exc
    finally:
        if not main.done():  # stopped by a signal: clean up what runs
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    log.info("service_stopped")


async def _run_until_stopped(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully: ``web.run_app`` without its one gap.

    ``run_app`` starts the application outside its clean-up: when one resource fails to start
    (a taken port, say), those started before it are left to the loop's finaliser, which prints
    a traceback for each. Here the clean-up covers the start as well.
    """
    runner = web.AppRunner(
        app, handle_signals=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        tune_garbage_collector()  # once everything start-up builds is there
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
