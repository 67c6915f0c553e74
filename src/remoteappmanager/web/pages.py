"""The pages under ``{svc}``: the user and admin pages, static files, who-am-I for API clients."""

from __future__ import annotations

from aiohttp import web

from remoteappmanager.domain.errors import Forbidden
from remoteappmanager.domain.routing import app_origin_pattern
from remoteappmanager.settings import Settings
from remoteappmanager.web.assets import (
    IMMUTABLE_CACHE,
    REVALIDATE_CACHE,
    VERSION_PARAM,
    PageAssets,
)
from remoteappmanager.web.auth import (
    XSRF_COOKIE,
    current_xsrf_token,
    is_https,
    new_xsrf_token,
    require_admin,
    require_user,
    resolve_auth,
    signed_in_user,
)
from remoteappmanager.web.keys import GATE, PAGE_ASSETS, SETTINGS, URLS

USER_TEMPLATE = "user.html"
ADMIN_TEMPLATE = "admin.html"
# The admin page, under ``{svc}``.
ADMIN_PATH = "admin/"


def content_security_policy(app_origins: str = "") -> str:
    """The pages build their DOM from API data with textContent only; this policy is the
    second line of defence should a value ever reach markup: no inline or foreign script,
    frames and form targets only on this site or the applications' own hosts (``app_origins``,
    a source expression), never framed themselves."""
    others = f"'self' {app_origins}".strip()
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"frame-src {others}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            f"form-action {others}",
            "frame-ancestors 'none'",
        )
    )


CONTENT_SECURITY_POLICY = content_security_policy()


def page_headers(app_origins: str = "") -> dict[str, str]:
    """Headers of every HTML page of the service.

    ``Cross-Origin-Opener-Policy`` keeps a page that an application opens in a new window
    out of that application's reach (they may share an origin).
    """
    return {
        "Content-Security-Policy": content_security_policy(app_origins),
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


_PAGE_HEADERS = page_headers()


def require_navigation(request: web.Request) -> None:
    """Refuse a page to a script: only a browser navigating to it gets it.

    Pages carry the XSRF token and what the signed-in user may see; an application that
    shares the service's origin could otherwise ``fetch`` them with the user's cookies.
    Browsers mark every request with ``Sec-Fetch-Mode`` (scripts cannot set it); a client
    that sends none (an older browser, or plain http to a remote host) is let through.
    """
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None and mode != "navigate":
        raise Forbidden("pages of this service open in the browser, not from scripts")


def app_sources(request: web.Request) -> str:
    """The applications' own hosts as a CSP source expression ("" when they have none)."""
    template = request.app[SETTINGS].app_origin_template
    return "" if template is None else app_origin_pattern(template)


def add_static_routes(app: web.Application) -> None:
    """Load the pages' templates and static files, and serve the latter at ``{svc}static/``."""
    static_prefix = app[URLS].prefix + "static/"
    app[PAGE_ASSETS] = PageAssets.load(static_prefix)
    app.router.add_get(static_prefix + "{name}", static_file, name="static")


@require_user
async def home(request: web.Request) -> web.StreamResponse:
    """``GET {svc}``: the user's applications; the browser fills it in from the REST API."""
    require_navigation(request)
    user = signed_in_user(request)
    urls, assets = request.app[URLS], request.app[PAGE_ASSETS]
    response = web.Response(content_type="text/html", headers=page_headers(app_sources(request)))
    page = assets.template(USER_TEMPLATE).render(
        {
            "api_url": urls.api + "v1/",
            "home_url": urls.home,
            "admin_url": urls.prefix + ADMIN_PATH,
            "logout_url": urls.logout,
            "user_name": user.name,
            "user_initial": user.name[:1].upper(),
            "is_admin": "true" if user.admin else "false",
            "desktop_viewer": "true" if _has_desktop_viewer(request) else "false",
            "cull_warning_s": str(request.app[SETTINGS].cull_warning_s),
            "xsrf_token": await xsrf_token_for_page(request, response),
            "css_url": assets.static_url("app.css"),
            "js_url": assets.static_url("app.js"),
            "favicon_url": assets.static_url("logo.svg"),
            "default_icon_url": assets.static_url("app-icon.svg"),
            "sharing": _sharing_switches(request.app[SETTINGS]),
        }
    )
    response.text = page
    return response


def _has_desktop_viewer(request: web.Request) -> bool:
    """Whether the gate serves the desktop viewer (``web.desktop_viewer``)."""
    gate = request.app.get(GATE)
    return gate is not None and gate.desktop is not None


def _sharing_switches(settings: Settings) -> str:
    """What the site allows of sharing and the clipboard, as words the page reads."""
    switches = {
        "sharing": settings.sharing,
        "links": settings.sharing and settings.link_shares,
        "control": settings.sharing and settings.control_shares,
        "clipboard-to-app": settings.clipboard_to_app,
        "clipboard-from-app": settings.clipboard_from_app,
    }
    return " ".join(name for name, on in switches.items() if on)


@require_admin
async def admin(request: web.Request) -> web.StreamResponse:
    """``GET {svc}admin/``: the admin page; the browser fills it in from the admin API."""
    require_navigation(request)
    user = signed_in_user(request)
    urls, assets = request.app[URLS], request.app[PAGE_ASSETS]
    response = web.Response(content_type="text/html", headers=_PAGE_HEADERS)
    response.text = assets.template(ADMIN_TEMPLATE).render(
        {
            "admin_api_url": urls.api + "v1/admin/",
            "home_url": urls.home,
            "admin_url": urls.prefix + ADMIN_PATH,
            "logout_url": urls.logout,
            "user_name": user.name,
            "user_initial": user.name[:1].upper(),
            "xsrf_token": await xsrf_token_for_page(request, response),
            "css_url": assets.static_url("app.css"),
            "admin_css_url": assets.static_url("admin.css"),
            "js_url": assets.static_url("admin.js"),
            "favicon_url": assets.static_url("logo.svg"),
            "default_icon_url": assets.static_url("app-icon.svg"),
        }
    )
    return response


async def xsrf_token_for_page(request: web.Request, response: web.Response) -> str:
    """The token the page echoes in ``X-XSRFToken``: the browser's own, or a new one set now.

    Empty for token-authenticated visits, which need none.
    """
    token = current_xsrf_token(request)
    if token is not None:
        return token
    auth = await resolve_auth(request)
    if auth is None or auth.session_id is None:
        return ""
    token = new_xsrf_token(request, auth.session_id)
    # The page's scripts take the token from the page; the cookie is for the server only.
    response.set_cookie(
        XSRF_COOKIE,
        token,
        path=request.app[URLS].prefix,
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )
    return token


async def static_file(request: web.Request) -> web.StreamResponse:
    """``GET {svc}static/<name>``: kept for a year when asked for by its versioned URL."""
    found = request.app[PAGE_ASSETS].static.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    current = request.query.get(VERSION_PARAM) == found.version
    headers = {
        "Cache-Control": IMMUTABLE_CACHE if current else REVALIDATE_CACHE,
        "ETag": found.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if found.content_type.startswith("text/") else None
    return web.Response(
        body=found.body, content_type=found.content_type, charset=charset, headers=headers
    )


@require_user
async def whoami(request: web.Request) -> web.StreamResponse:
    """``GET {svc}api/v1/user``: the caller as we see them (name, admin, groups)."""
    user = signed_in_user(request)
    return web.json_response(
        {"name": user.name, "admin": user.admin, "groups": sorted(user.groups)}
    )


async def add_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app[URLS].prefix)


async def add_admin_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app[URLS].prefix + ADMIN_PATH)
