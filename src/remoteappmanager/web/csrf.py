"""CSRF protection for state-changing requests that ride on the session cookie.

Two independent checks, both required: the request must come from our own origin (``Origin``,
else ``Referer``, when the browser sends one), and it must echo the session's ``_xsrf`` cookie
in the ``X-XSRFToken`` header or an ``_xsrf`` form field. The token is bound to the session by
a keyed digest, so a cookie planted by a sibling site is worthless. Requests authenticated by an
``Authorization`` token are exempt: a cross-site page cannot make a browser send that header.

A browser's reads of the REST API (any method, marked by the ``Sec-Fetch-Site`` header that
scripts cannot set) need the token header too: an application that shares the service's
origin could otherwise read the API with the user's cookie. The service's own pages send it
with every request; the token is only in those pages and in an HttpOnly cookie.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.domain.errors import Forbidden
from remoteappmanager.web.auth import (
    XSRF_COOKIE,
    XSRF_FIELD,
    XSRF_HEADER,
    AuthMethod,
    cookie_values,
    resolve_auth,
    xsrf_token_valid,
)
from remoteappmanager.web.keys import URLS

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def check_same_origin(request: web.Request) -> None:
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source is None:
        return
    host = request.host.lower()
    if source == "null" or urlsplit(source).netloc.lower() != host:
        raise Forbidden("cross-site request refused (its origin is not this site)")


async def _submitted_token(request: web.Request) -> str | None:
    token = request.headers.get(XSRF_HEADER)
    if token:
        return token
    if request.content_type in _FORM_TYPES:
        # aiohttp keeps the parsed form, so the handler can read it again.
        form = await request.post()
        field = form.get(XSRF_FIELD)
        return field if isinstance(field, str) and field else None
    return None


def _browser_reads_api(request: web.Request) -> bool:
    # The versioned API only: its description (``api/openapi.json``) stays open to a browser.
    api = request.app[URLS].api + "v1/"
    return "Sec-Fetch-Site" in request.headers and request.path.startswith(api)


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in SAFE_METHODS and _browser_reads_api(request):
        auth = await resolve_auth(request)
        if auth is not None and auth.method is AuthMethod.SESSION and auth.session_id:
            token = request.headers.get(XSRF_HEADER)
            if token is None or not xsrf_token_valid(request, auth.session_id, token):
                raise Forbidden(
                    f"a browser reads this API from the service's pages only (the "
                    f"{XSRF_HEADER} header is missing or wrong)"
                )
    elif request.method not in SAFE_METHODS:
        auth = await resolve_auth(request)
        if auth is not None and auth.method is AuthMethod.SESSION and auth.session_id:
            check_same_origin(request)
            token = await _submitted_token(request)
            if (
                token is None
                or not xsrf_token_valid(request, auth.session_id, token)
                or not any(
                    secrets.compare_digest(token.encode(), cookie.encode())
                    for cookie in cookie_values(request, XSRF_COOKIE)
                )
            ):
                raise Forbidden(
                    f"missing or wrong XSRF token: send the {XSRF_COOKIE} cookie's value "
                    f"in the {XSRF_HEADER} header"
                )
    return await handler(request)
